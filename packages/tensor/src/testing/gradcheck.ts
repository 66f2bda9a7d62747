/**
 * Gradient checking against central finite differences, in float64. Exported for other packages'
 * tests (nn layers, strategies) through `@fulgur/tensor/testing`.
 */
import { noGrad } from "../gradMode";
import { scope } from "../memory";
import type { Tensor } from "../tensor";
import { fromHost } from "../ops/creation";

export interface GradcheckResult {
  /** Largest |analytic - numeric| / max(1, |numeric|) over every checked element. */
  maxError: number;
  worst: { input: number; index: number; analytic: number; numeric: number } | null;
}

/**
 * Compares d(sum(fn(inputs) * probe))/d(inputs) from backward with central differences.
 * Inputs must be float64 leaves; a fixed random probe makes every output element matter.
 */
export function gradcheck(fn: (...inputs: Tensor[]) => Tensor, inputs: Tensor[], eps = 1e-6): GradcheckResult {
  for (const t of inputs) {
    if (t.dtype !== "float64") throw new TypeError(`gradcheck: inputs must be float64, got ${t.dtype}`);
  }
  const probeOf = (shape: readonly number[]): Tensor => {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float64Array(n);
    for (let i = 0; i < n; i++) data[i] = Math.sin(1.7 * i + 0.3) + 0.5;
    return fromHost(data, shape, "float64");
  };
  const objective = (): number =>
    scope(() => noGrad(() => {
      const y = fn(...inputs);
      return y.mul(probeOf(y.shape)).sum().item();
    }));
  for (const t of inputs) {
    t.grad?.dispose();
    t.grad = null;
    t.requiresGrad_(true);
  }
  scope(() => {
    const y = fn(...inputs);
    y.mul(probeOf(y.shape)).sum().backward();
  });
  let maxError = 0;
  let worst: GradcheckResult["worst"] = null;
  inputs.forEach((t, k) => {
    const analytic = t.grad ? t.grad.toFloat64Array() : new Float64Array(t.numel);
    const data = t.storage as unknown as { data: Float64Array };
    if (!(data.data instanceof Float64Array) || !t.isContiguous() || t.offset !== 0) {
      throw new TypeError("gradcheck: inputs must be contiguous float64 CPU tensors");
    }
    for (let i = 0; i < t.numel; i++) {
      const orig = data.data[i];
      data.data[i] = orig + eps;
      const plus = objective();
      data.data[i] = orig - eps;
      const minus = objective();
      data.data[i] = orig;
      const numeric = (plus - minus) / (2 * eps);
      const err = Math.abs(analytic[i] - numeric) / Math.max(1, Math.abs(numeric));
      if (err > maxError || worst === null) {
        if (err >= maxError) worst = { input: k, index: i, analytic: analytic[i], numeric };
        maxError = Math.max(maxError, err);
      }
    }
  });
  return { maxError, worst };
}
