/**
 * Launching: asked to start the ranks when nothing started them. ParallelStrategy re-runs the
 * script once per rank (or forks workers); this one leaves starting them to `fulgur run`.
 */
import type { Launching } from "@fulgur/core";
import { AveragingStrategy } from "./averagingStrategy";

export class ExternallyLaunchedStrategy extends AveragingStrategy implements Launching {
  override readonly name: string = "averaging_external";

  override async launch(context: { devices: number; numNodes: number; script: string }): Promise<"continue" | "done"> {
    throw new Error(
      `${this.name} does not start processes; run \`fulgur run --nproc-per-node ${context.devices} --nnodes ${context.numNodes} ${context.script}\``,
    );
  }
}
