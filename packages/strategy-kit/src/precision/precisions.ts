/**
 * The built-in precisions. "bf16-mixed" keeps fp32 master weights and runs matrix products in
 * bf16 under autocast (reductions and losses stay fp32); "bf16-true" stores the weights in bf16;
 * "16-mixed" runs in fp16 with a dynamic loss scale that skips steps whose gradients overflowed.
 * Each owns the optimizer step (optimizerStep.ts), as Lightning's precision plugins do.
 */
import {
  CONTRACT_VERSION,
  type OptimizerStepResult,
  type Precision,
  type PrecisionStepOptions,
} from "@fulgur/core";
import type { Module, Optimizer } from "@fulgur/nn";
import { type DType, type Tensor, autocast, scope } from "@fulgur/tensor";
import { GradScaler } from "./gradScaler";
import { runOptimizerStep } from "./optimizerStep";

export const PRECISIONS = ["32-true", "64-true", "bf16-mixed", "bf16-true", "16-mixed"] as const;
export type PrecisionName = (typeof PRECISIONS)[number];

/** Lightning's short spellings. */
export const PRECISION_ALIASES: Readonly<Record<string, PrecisionName>> = {
  "32": "32-true",
  "64": "64-true",
  bf16: "bf16-mixed",
  "16": "16-mixed",
  "32-true": "32-true",
  "64-true": "64-true",
  "bf16-mixed": "bf16-mixed",
  "bf16-true": "bf16-true",
  "16-mixed": "16-mixed",
};

/** A precision without loss scaling: gradients are never scaled, so they need no unscaling. */
export class BasePrecision implements Precision {
  readonly contractVersion = CONTRACT_VERSION;
  constructor(
    readonly name: string,
    /** The dtype matrix products run in under autocast, or null for none. */
    readonly computeDtype: DType | null,
    /** The dtype parameters are stored in, or null to leave them as built. */
    readonly weightDtype: DType | null,
  ) {}

  convertModule(module: Module): void {
    if (this.weightDtype) module.to(this.weightDtype);
  }

  forwardContext<T>(fn: () => T): T {
    return this.computeDtype ? autocast(this.computeDtype, fn) : fn();
  }

  backward(loss: Tensor): void {
    loss.backward();
  }

  optimizerStep(optimizer: Optimizer, options: PrecisionStepOptions): Promise<OptimizerStepResult> {
    return runOptimizerStep(optimizer, options, null);
  }

  stateDict(): Record<string, number> {
    return {};
  }

  loadStateDict(_state: Record<string, number>): void {}
}

/** fp16 compute with a dynamic loss scale (PyTorch's GradScaler). */
export class MixedFp16Precision extends BasePrecision {
  readonly scaler = new GradScaler();

  constructor() {
    super("16-mixed", "float16", null);
  }

  override backward(loss: Tensor): void {
    scope(() => this.scaler.scale(loss).backward());
  }

  override optimizerStep(optimizer: Optimizer, options: PrecisionStepOptions): Promise<OptimizerStepResult> {
    return runOptimizerStep(optimizer, options, this.scaler);
  }

  override stateDict(): Record<string, number> {
    return this.scaler.stateDict();
  }

  override loadStateDict(state: Record<string, number>): void {
    this.scaler.loadStateDict(state);
  }
}

export function createPrecision(name: string): Precision {
  const canonical = PRECISION_ALIASES[name];
  switch (canonical) {
    case "32-true":
      return new BasePrecision("32-true", null, null);
    case "64-true":
      return new BasePrecision("64-true", null, "float64");
    case "bf16-mixed":
      return new BasePrecision("bf16-mixed", "bfloat16", null);
    case "bf16-true":
      return new BasePrecision("bf16-true", null, "bfloat16");
    case "16-mixed":
      return new MixedFp16Precision();
    default:
      throw new TypeError(
        `precision: got ${JSON.stringify(name)}; expected one of ${Object.keys(PRECISION_ALIASES).map((k) => JSON.stringify(k)).join(", ")}`,
      );
  }
}
