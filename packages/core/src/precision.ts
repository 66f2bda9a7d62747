/**
 * How numbers are represented during training: "32-true", "bf16-mixed" (fp32 master weights, bf16
 * compute, fp32 reductions), "bf16-true", "16-mixed" (fp16 compute with dynamic loss scaling).
 */
import type { Tensor } from "@fulgur/tensor";
import type { Module, Optimizer } from "@fulgur/nn";
import type { ContractVersioned } from "./plugin";

export interface Precision extends ContractVersioned {
  readonly name: string;
  /** Casts or wraps the module as the precision requires (bf16-true casts parameters). */
  convertModule(module: Module): void;
  /** Runs the forward pass (and loss) under the precision's autocast. */
  forwardContext<T>(fn: () => T): T;
  /** Calls backward on the (possibly scaled) loss. */
  backward(loss: Tensor): void;
  /** Unscales gradients before clipping or inspection; returns false when they overflowed. */
  unscaleGradients(optimizer: Optimizer): boolean;
  /** Steps the optimizer unless gradients overflowed; returns whether the step was taken. */
  optimizerStep(optimizer: Optimizer, gradientsFinite: boolean): boolean;
  stateDict(): Record<string, number>;
  loadStateDict(state: Record<string, number>): void;
}
