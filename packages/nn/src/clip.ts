/**
 * Gradient clipping with PyTorch's semantics (`clip_grad_norm_`, `clip_grad_value_`). The total
 * norm is accumulated on the device and read once, so clipping costs one host synchronisation.
 */
import { maximum, noGrad, scope, where } from "@fulgur/tensor";
import type { Tensor } from "@fulgur/tensor";

function gradsOf(parameters: Iterable<Tensor> | Tensor): Tensor[] {
  const list = typeof (parameters as Tensor).backward === "function" ? [parameters as Tensor] : [...(parameters as Iterable<Tensor>)];
  return list.map((p) => p.grad).filter((g): g is Tensor => g !== null);
}

export interface ClipGradNormOptions {
  /** Throw when the total norm is NaN or infinite instead of scaling by it (default false, as PyTorch). */
  readonly errorIfNonfinite?: boolean;
}

/**
 * Scales every gradient in place by min(1, maxNorm / (total + 1e-6)), where total is the
 * `normType`-norm of all gradients taken together (Infinity for the max norm). Returns total.
 */
export function clipGradNorm(
  parameters: Iterable<Tensor> | Tensor,
  maxNorm: number,
  normType = 2,
  options: ClipGradNormOptions = {},
): number {
  if (typeof maxNorm !== "number" || Number.isNaN(maxNorm) || maxNorm < 0) {
    throw new RangeError(`clipGradNorm: maxNorm must be a number >= 0; got ${maxNorm}`);
  }
  if (typeof normType !== "number" || !(normType > 0)) {
    throw new RangeError(`clipGradNorm: normType must be a number > 0 or Infinity; got ${normType}`);
  }
  const grads = gradsOf(parameters);
  if (grads.length === 0) return 0;
  const part = gradNormPart(grads, normType);
  const total = normType === Infinity || normType === 1 ? part : part ** (1 / normType);
  if (options.errorIfNonfinite && !Number.isFinite(total)) {
    throw new Error(`clipGradNorm: the total norm of order ${normType} of the gradients is ${total}; set errorIfNonfinite to false to scale anyway`);
  }
  scaleToNorm(grads, total, maxNorm);
  return total;
}

/**
 * The part of a `normType`-norm that adds up across shards: the sum of |g|^p over every element
 * (the max of |g| for Infinity). A sharded strategy sums (or maxes) these over ranks and takes the
 * root itself; `clipGradNorm` does the same on one rank. Read from the device once.
 */
export function gradNormPart(grads: readonly Tensor[], normType = 2): number {
  if (grads.length === 0) return 0;
  return noGrad(() =>
    scope(() => {
      // One accumulator per device (a model partly offloaded to the host has gradients on both),
      // each read once.
      const acc = new Map<string, Tensor>();
      for (const g of grads) {
        // Reduce in at least float32 so bf16 gradients do not lose the sum.
        const x = g.dtype === "float64" || g.dtype === "float32" ? g : g.to("float32");
        let part: Tensor;
        if (normType === Infinity) part = x.abs().max();
        else if (normType === 2) part = x.square().sum();
        else if (normType === 1) part = x.abs().sum();
        else part = x.abs().pow(normType).sum();
        const prev = acc.get(g.device);
        if (prev === undefined) acc.set(g.device, part);
        else acc.set(g.device, normType === Infinity ? maximum(prev, part.to(prev.dtype)) : prev.add(part.to(prev.dtype)));
      }
      const parts = [...acc.values()].map((t) => t.item());
      return normType === Infinity ? Math.max(...parts) : parts.reduce((s, v) => s + v, 0);
    }),
  );
}

/** Scales gradients in place by min(1, maxNorm / (total + 1e-6)), PyTorch's clipping coefficient. */
export function scaleToNorm(grads: readonly Tensor[], total: number, maxNorm: number): void {
  const coef = maxNorm / (total + 1e-6);
  // coef >= 1 leaves gradients as they are; NaN (a non-finite norm) propagates as in PyTorch.
  if (!(coef >= 1)) noGrad(() => grads.forEach((g) => g.mul_(coef)));
}

/** Clamps every gradient element to [-clipValue, clipValue] in place. */
export function clipGradValue(parameters: Iterable<Tensor> | Tensor, clipValue: number): void {
  if (typeof clipValue !== "number" || !(clipValue >= 0)) {
    throw new RangeError(`clipGradValue: clipValue must be a number >= 0; got ${clipValue}`);
  }
  clampGradients(gradsOf(parameters), clipValue);
}

/** Clamps each tensor's elements to [-clipValue, clipValue] in place (gradients held apart from parameters). */
export function clampGradients(grads: readonly Tensor[], clipValue: number): void {
  noGrad(() =>
    scope(() => {
      for (const g of grads) g.copy_(where(g.gt(clipValue), clipValue, where(g.lt(-clipValue), -clipValue, g)));
    }),
  );
}
