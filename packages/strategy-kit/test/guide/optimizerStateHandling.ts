/**
 * OptimizerStateHandling: the strategy writes and reads the optimizer's state in checkpoints (a
 * sharded strategy names each parameter's slice). This one tags its layout and refuses another.
 */
import type { OptimizerState, OptimizerStateHandling } from "@fulgur/core";
import { type Optimizer, flattenOptimizerState, unflattenOptimizerState } from "@fulgur/nn";
import { SingleDeviceStrategy } from "@fulgur/strategy-kit";

const LAYOUT = "tagged-v1";

export class TaggedStateStrategy extends SingleDeviceStrategy implements OptimizerStateHandling {
  override readonly name: string = "tagged_state";

  async optimizerStateDict(optimizer: Optimizer): Promise<OptimizerState> {
    const flat = flattenOptimizerState(optimizer.stateDict());
    return { tensors: flat.tensors, meta: { ...flat.meta, layout: LAYOUT } };
  }

  async loadOptimizerStateDict(optimizer: Optimizer, state: OptimizerState): Promise<void> {
    const { layout, ...meta } = state.meta;
    if (layout !== LAYOUT) throw new Error(`${this.name}: optimizer state of layout ${JSON.stringify(layout)}; this strategy reads "${LAYOUT}"`);
    optimizer.loadStateDict(unflattenOptimizerState(state.tensors, meta as never));
  }
}
