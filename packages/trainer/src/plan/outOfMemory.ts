/**
 * What an out-of-memory error in `fit` says (issue 15): the step, the phase (forward, backward,
 * optimizer, or gather when the sharding engine was gathering a unit), and what would fit, read
 * from the memory plan the Trainer made before launch: a smaller micro-batch of the same strategy,
 * and the strategies that fit at this micro-batch. The original error stays as `cause`.
 */
import type { MemoryPhase } from "@fulgur/core";
import { type OutOfMemoryContext, isOutOfMemory } from "@fulgur/tensor";
import { type MemoryPlan, formatBytes } from "./memoryPlan";

export class TrainingOutOfMemoryError extends Error {
  override readonly name = "TrainingOutOfMemoryError";
  constructor(
    message: string,
    /** The optimizer step that ran out (1-based). */
    readonly step: number,
    readonly phase: MemoryPhase | null,
    /** What the plan says would fit, or why there is nothing to say. */
    readonly advice: string,
    options: { cause: unknown },
  ) {
    super(message, options);
  }
}

/** What would make it fit, from the plan, in one sentence. */
export function outOfMemoryAdvice(plan: MemoryPlan | null, strategy: string, microBatch: number): string {
  if (!plan) {
    return "No memory plan was made for this run (on the CPU accelerator the Trainer plans only for a described machine): give the Trainer option machine: { gpuMemory, hostMemory, diskSpace }, or run `fulgur plan`, to see what fits.";
  }
  const own = plan.rows.find((r) => r.strategy === strategy && r.error === undefined);
  const parts: string[] = [];
  if (own && own.maxMicroBatch >= 1 && own.maxMicroBatch < microBatch) {
    const factor = Math.ceil(microBatch / own.maxMicroBatch);
    parts.push(`micro-batch ${own.maxMicroBatch} fits with ${strategy} (accumulateGradBatches × ${factor} keeps about the same batch per step)`);
  }
  const others = plan.rows.filter((r) => r.strategy !== strategy && r.error === undefined && r.fits).map((r) => r.strategy);
  if (others.length > 0) parts.push(`${others.join(", ")} ${others.length === 1 ? "fits" : "fit"} at micro-batch ${microBatch}`);
  if (own?.fits) {
    parts.push(
      `the plan estimated ${formatBytes(own.perDeviceBytes)} per GPU for ${strategy}, within the ${formatBytes(plan.usableGpuBytes)} it counts as usable: memory outside the estimate (another process on the device?) or an estimate that is short; please report it with the plan`,
    );
  }
  if (parts.length === 0) return `From the memory plan: nothing fits this machine at micro-batch ${microBatch}, not even micro-batch 1 with ${strategy}; more devices or more host memory are needed.`;
  return `From the memory plan: ${parts.join("; ")}.`;
}

/** The error `fit` throws for an allocation that failed during a step; other errors pass through unchanged. */
export function explainOutOfMemory(err: unknown, at: { step: number; epoch: number; phase: MemoryPhase | null; strategy: string; microBatch: number; plan: MemoryPlan | null }): unknown {
  if (!isOutOfMemory(err)) return err;
  const context = err as OutOfMemoryContext;
  const phase = context.phase ?? at.phase;
  const advice = outOfMemoryAdvice(at.plan, at.strategy, at.microBatch);
  const where = context.where ? ` (${context.where})` : "";
  const first = err.message.split("\n")[0];
  return new TrainingOutOfMemoryError(
    `out of memory at step ${at.step} (epoch ${at.epoch}), in ${phase ? `the ${phase}` : "the step, outside forward, backward and the optimizer step"}${where}, training ${at.strategy} at micro-batch ${at.microBatch}: ${first}\n${advice}`,
    at.step,
    phase,
    advice,
    { cause: err },
  );
}
