/**
 * BatchRunning: the strategy runs forward and backward of a whole batch (a pipeline runs its
 * schedule here). This one runs each batch as two halves, holding half the activations at a time.
 */
import type { BatchContext, BatchRunning } from "@fulgur/core";
import { SingleDeviceStrategy } from "@fulgur/strategy-kit";
import { type Tensor, noGrad } from "@fulgur/tensor";

export class HalvingStrategy extends SingleDeviceStrategy implements BatchRunning {
  override readonly name: string = "halving";

  runBatch(c: BatchContext): Tensor {
    const batch = c.batch as Tensor[]; // here: tensors whose first dimension is the sample
    const rows = batch[0].shape[0];
    const half = Math.ceil(rows / 2);
    let total: Tensor | null = null;
    for (const [start, count] of [[0, half], [half, rows - half]]) {
      if (count === 0) continue;
      const loss = c.trainingStep(batch.map((t) => t.narrow(0, start, count)));
      // The loss is a mean over rows: weigh each half by its share of them.
      this.backward(loss.mul(count / rows / c.lossDivisor));
      const part = noGrad(() => loss.mul(count / rows));
      total = total ? total.add(part) : part;
    }
    return total!;
  }
}
