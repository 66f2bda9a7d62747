/**
 * Fused AdamW (PyTorch's decoupled weight decay) over a list of parameters in one call, so the
 * optimizer step costs one pass per parameter instead of a dozen elementwise kernels.
 * fp32 parameters with fp32 state go through WebAssembly SIMD in fp32 (adamwSimd.ts); other dtypes
 * compute in float64 and round once on store to the parameter/state dtype. Each element's
 * update depends on that element alone, so a range of a tensor updates exactly as the whole does:
 * the worker threads of optimizerThreads.ts run `adamwRange` on ranges of the same memory.
 */
import type { AdamWHyper, View } from "../backend";
import type { DType, HostArray } from "../dtype";
import { dataOf } from "./storage";
import type { FloatArray, NumArray } from "./strided";
import { decodeRow, encodeRow, is16, numelOf } from "./strided";
import { adamwF32Simd } from "./adamwSimd";

/** A contiguous run of elements in a host array: what a view of a CPU storage is, without the storage. */
export interface HostRange {
  readonly data: HostArray;
  readonly dtype: DType;
  readonly offset: number;
}

/** Contiguous float64/float32 row for a range, decoding 16-bit floats into a copy. */
function floatsOf(r: HostRange, n: number): { arr: NumArray; off: number; wide: boolean } {
  if (!is16(r.dtype)) return { arr: r.data as NumArray, off: r.offset, wide: false };
  const buf = new Float64Array(n);
  decodeRow(r.data, r.dtype, r.offset, 1, n, buf, 0);
  return { arr: buf, off: 0, wide: true };
}

/** One tensor's update over `n` elements from each range's offset. */
export function adamwRange(p: HostRange, g: HostRange, m: HostRange, v: HostRange, n: number, hyper: AdamWHyper, lowPrecision: HostRange | null): void {
  const { lr, beta1, beta2, eps, weightDecay, step } = hyper;
  const sign = hyper.maximize ? -1 : 1;
  const bc1 = 1 - Math.pow(beta1, step);
  const bc2 = 1 - Math.pow(beta2, step);
  const decay = 1 - lr * weightDecay;
  // PyTorch's arrangement (step size lr / bc1, denominator sqrt(v) / sqrt(bc2) + eps) with the
  // constant divisions hoisted: one division and one square root per element. Divisions dominate
  // the step on the CPU (offload's optimizer over billions of elements): three of them cost twice.
  const stepSize = lr / bc1;
  const invSqrtBc2 = 1 / Math.sqrt(bc2);
  const c1 = 1 - beta1;
  const c2 = 1 - beta2;
  const P = floatsOf(p, n);
  const G = floatsOf(g, n);
  const Mv = floatsOf(m, n);
  const V = floatsOf(v, n);
  const pa = P.arr;
  const ga = G.arr;
  const ma = Mv.arr;
  const va = V.arr;
  if (pa instanceof Float32Array && ga instanceof Float32Array && ma instanceof Float32Array && va instanceof Float32Array) {
    const k = { beta1, beta2, c1, c2, stepSize, invSqrtBc2, eps, decay, sign };
    // A bf16 copy is written by the kernel in the same pass; another dtype's after it.
    const bf16 = lowPrecision?.dtype === "bfloat16" && lowPrecision.data instanceof Uint16Array ? lowPrecision : null;
    if (adamwF32Simd(pa, P.off, ga, G.off, ma, Mv.off, va, V.off, n, k, bf16 && (bf16.data as Uint16Array), bf16?.offset ?? 0)) {
      if (!bf16) writeLowPrecision(p, n, lowPrecision);
      return;
    }
  }
  let po = P.off;
  let go = G.off;
  let mo = Mv.off;
  let vo = V.off;
  for (let i = 0; i < n; i++, po++, go++, mo++, vo++) {
    const gi = sign * ga[go];
    const mi = beta1 * ma[mo] + c1 * gi;
    const vi = beta2 * va[vo] + c2 * gi * gi;
    ma[mo] = mi;
    va[vo] = vi;
    pa[po] = pa[po] * decay - (stepSize * mi) / (Math.sqrt(vi) * invSqrtBc2 + eps);
  }
  for (const [r, f] of [
    [p, P],
    [m, Mv],
    [v, V],
  ] as const) {
    if (f.wide) encodeRow(f.arr as FloatArray, 0, n, r.data, r.dtype, r.offset, 1);
  }
  writeLowPrecision(p, n, lowPrecision);
}

/** The copy is the stored parameter rounded once more, as a cast of it would be. */
function writeLowPrecision(p: HostRange, n: number, lowPrecision: HostRange | null): void {
  if (!lowPrecision) return;
  const stored = floatsOf(p, n);
  const vals = stored.wide ? (stored.arr as FloatArray) : Float64Array.from((stored.arr as NumArray).subarray(stored.off, stored.off + n));
  encodeRow(vals, 0, n, lowPrecision.data, lowPrecision.dtype, lowPrecision.offset, 1);
}

export const rangeOf = (v: View): HostRange => ({ data: dataOf(v), dtype: v.storage.dtype, offset: v.offset });

export function adamw(
  params: View[],
  grads: View[],
  expAvg: View[],
  expAvgSq: View[],
  hyper: AdamWHyper,
  lowPrecision?: readonly (View | null)[],
): void {
  for (let t = 0; t < params.length; t++) {
    const lp = lowPrecision?.[t];
    adamwRange(rangeOf(params[t]), rangeOf(grads[t]), rangeOf(expAvg[t]), rangeOf(expAvgSq[t]), numelOf(params[t].shape), hyper, lp ? rangeOf(lp) : null);
  }
}
