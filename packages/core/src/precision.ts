/**
 * How numbers are represented during training: "32-true", "bf16-mixed" (fp32 master weights, bf16
 * compute, fp32 reductions), "bf16-true", "16-mixed" (fp16 compute with dynamic loss scaling).
 *
 * The precision owns the one optimizer-step sequence every strategy uses (as Lightning's precision
 * plugin does): unscale → clip → step (skipped when fp16 gradients overflowed) → zero gradients.
 * A strategy whose ranks hold different parts of the gradients (sharded) passes `collectives`, so
 * the overflow check and the clipping norm are global; a replicated strategy passes nothing.
 */
import type { Tensor } from "@fulgur/tensor";
import type { Module, Optimizer } from "@fulgur/nn";
import type { ContractVersioned } from "./plugin";

export interface OptimizerStepOptions {
  /** Clip gradients to this global norm (algorithm "norm") or this absolute value ("value"). */
  readonly gradientClipVal?: number;
  readonly gradientClipAlgorithm?: "norm" | "value";
}

export interface OptimizerStepResult {
  /** False when the step was skipped (fp16 overflow). */
  readonly stepped: boolean;
  /** Global gradient norm before clipping, when clipping by norm was asked for. */
  readonly gradNorm?: number;
}

/** What a sharded strategy lends the step so that decisions over all gradients are global. */
export interface StepCollectives {
  /** True only when every rank's local gradients were finite. */
  allFinite(localFinite: boolean): Promise<boolean>;
  /** The sum over ranks of each rank's value (partial squared gradient norms). */
  sumOverRanks(local: number): Promise<number>;
}

export interface PrecisionStepOptions extends OptimizerStepOptions {
  /** Absent: every rank holds whole gradients (single device, DDP), so local decisions are global. */
  readonly collectives?: StepCollectives;
  /**
   * The gradients the step reads, when they are not the `.grad` of the optimizer's parameters
   * (default: those). Sharded strategies step over local slices and say so here.
   */
  readonly gradients?: readonly Tensor[];
}

export interface Precision extends ContractVersioned {
  readonly name: string;
  /** Casts or wraps the module as the precision requires (bf16-true casts parameters). */
  convertModule(module: Module): void;
  /** Runs the forward pass (and loss) under the precision's autocast. */
  forwardContext<T>(fn: () => T): T;
  /** Calls backward on the (possibly scaled) loss. */
  backward(loss: Tensor): void;
  /** unscale → clip → step (unless gradients overflowed) → zero gradients. */
  optimizerStep(optimizer: Optimizer, options: PrecisionStepOptions): Promise<OptimizerStepResult>;
  stateDict(): Record<string, number>;
  loadStateDict(state: Record<string, number>): void;
}
