/**
 * The built-in precisions. "bf16-mixed" keeps fp32 master weights and runs matrix products in
 * bf16 under autocast (reductions and losses stay fp32); "bf16-true" stores the weights in bf16;
 * "16-mixed" runs in fp16 with a dynamic loss scale that skips steps whose gradients overflowed.
 */
import { CONTRACT_VERSION, type Precision } from "@fulgur/core";
import type { Module, Optimizer } from "@fulgur/nn";
import { type DType, type Tensor, autocast, scope } from "@fulgur/tensor";
import { GradScaler } from "./gradScaler";

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

function gradsOf(optimizer: Optimizer): Tensor[] {
  const out: Tensor[] = [];
  for (const g of optimizer.paramGroups) for (const p of g.params) if (p.grad) out.push(p.grad);
  return out;
}

class BasePrecision implements Precision {
  readonly contractVersion = CONTRACT_VERSION;
  constructor(
    readonly name: PrecisionName,
    private readonly castDtype: DType | null,
    private readonly weightDtype: DType | null,
  ) {}

  convertModule(module: Module): void {
    if (this.weightDtype) module.to(this.weightDtype);
  }

  forwardContext<T>(fn: () => T): T {
    return this.castDtype ? autocast(this.castDtype, fn) : fn();
  }

  backward(loss: Tensor): void {
    loss.backward();
  }

  unscaleGradients(_optimizer: Optimizer): boolean {
    return true;
  }

  optimizerStep(optimizer: Optimizer, gradientsFinite: boolean): boolean {
    if (!gradientsFinite) return false;
    optimizer.step();
    return true;
  }

  stateDict(): Record<string, number> {
    return {};
  }

  loadStateDict(_state: Record<string, number>): void {}
}

class MixedFp16Precision extends BasePrecision {
  readonly scaler = new GradScaler();

  constructor() {
    super("16-mixed", "float16", null);
  }

  override backward(loss: Tensor): void {
    scope(() => this.scaler.scale(loss).backward());
  }

  override unscaleGradients(optimizer: Optimizer): boolean {
    return this.scaler.unscale(gradsOf(optimizer));
  }

  override optimizerStep(optimizer: Optimizer, gradientsFinite: boolean): boolean {
    const stepped = super.optimizerStep(optimizer, gradientsFinite);
    this.scaler.update(gradientsFinite);
    return stepped;
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
