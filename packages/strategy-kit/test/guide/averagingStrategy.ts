/**
 * `averaging`: data-parallel training in one small class on the kit's ParallelStrategy, which
 * already launches the ranks, joins the job, makes failures travel and offers collectives. What
 * this class adds is what makes it data parallel: every rank starts from rank 0's weights, and
 * before each step the gradients become their mean over the ranks, so every rank takes the same
 * step, the one a single device takes on the global batch. (DDP averages while backward still
 * runs, bucket by bucket; waiting for the step is simpler and slower.)
 */
import type { PrecisionStepOptions } from "@fulgur/core";
import type { Module, Optimizer } from "@fulgur/nn";
import { ParallelStrategy, allReduceTensors } from "@fulgur/strategy-kit";

export class AveragingStrategy extends ParallelStrategy {
  readonly name: string = "averaging";

  override async setupModule(module: Module): Promise<Module> {
    module.to(this.rootDevice);
    await this.broadcastTensors([...module.parameters(), ...module.buffers()], 0);
    return module;
  }

  /** Runs before the precision's step (unscale, clip, step, zero gradients). */
  protected override async prepareStep(optimizer: Optimizer): Promise<Partial<PrecisionStepOptions>> {
    const grads = optimizer.paramGroups.flatMap((g) => g.params).flatMap((p) => (p.grad ? [p.grad] : []));
    // Flattened into a few large buffers, one message each, not one per parameter (decision 5);
    // `race` fails at once, naming the rank, if another rank has failed (decision 12).
    if (this.worldSize > 1) await allReduceTensors(this.processGroup, grads, "avg", this.race);
    // Every rank now holds the same gradients: the step needs no collectives of its own.
    return {};
  }
}
