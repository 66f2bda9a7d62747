/**
 * ZB-H1 (Qi et al. 2023, "Zero Bubble Pipeline Parallelism"): backward is split into B (gradients
 * of the stage's input, which the previous stage waits for) and W (gradients of the weights, which
 * nobody waits for). The order of F and B is 1F1B's; rank r defers its W passes by r micro-batches
 * and runs them where 1F1B idles while draining. The number of micro-batches a rank holds
 * activations for stays within p, 1F1B's peak (rank 0's), and with F = B = W the bubble is about a
 * third of 1F1B's: (p−1)(F+B−W) instead of (p−1)(F+B+W).
 */
import { type Action, type PipelineSchedule, type ScheduleShape, B, W, checkShape, withMessages } from "./action";
import { oneFOneBOrder } from "./oneFOneB";

export function zbh1(shape: ScheduleShape): PipelineSchedule {
  const s = checkShape({ ...shape, virtualStages: 1 }, "zb-h1");
  const { stages: p, microBatches: m } = s;
  const compute = Array.from({ length: p }, (_, r) => {
    let nextW = 0;
    const order = oneFOneBOrder(p, m, r, (i) => {
      const out: Action[] = [B(i, r)];
      // Deferred by r: the W of micro-batch i−r follows the B of micro-batch i.
      if (i - r >= nextW) out.push(W(nextW++, r));
      return out;
    });
    while (nextW < m) order.push(W(nextW++, r));
    return order;
  });
  return withMessages("zb-h1", s, true, compute);
}
