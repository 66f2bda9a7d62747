/**
 * MemoryEstimating: what a model will hold per device, per host and on disk, for `fulgur plan`.
 * This strategy keeps a moving average of the weights: one more copy of every trained parameter.
 */
import type { MemoryEstimate, MemoryEstimateInput, MemoryEstimating } from "@fulgur/core";
import { SingleDeviceStrategy, breakdown, estimateReplicatedMemory, modelBytes } from "@fulgur/strategy-kit";

export class AveragedWeightsStrategy extends SingleDeviceStrategy implements MemoryEstimating {
  override readonly name: string = "averaged_weights";

  override estimateMemory(input: MemoryEstimateInput): MemoryEstimate {
    const base = estimateReplicatedMemory(this.name, input, { communicationBytes: 0 });
    const average = modelBytes(input).trainable;
    return {
      ...base,
      perDevice: breakdown({ ...base.perDevice, workspace: base.perDevice.workspace + average }),
      notes: [...base.notes, "workspace: the moving average of the trained weights"],
    };
  }
}
