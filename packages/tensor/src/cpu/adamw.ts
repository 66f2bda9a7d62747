/**
 * Fused AdamW (PyTorch's decoupled weight decay) over a list of parameters in one call, so the
 * optimizer step costs one pass per parameter instead of a dozen elementwise kernels.
 * Arithmetic is float64 and rounds once on store to the parameter/state dtype.
 */
import type { AdamWHyper, View } from "../backend";
import type { HostArray } from "../dtype";
import { dataOf } from "./storage";
import type { FloatArray, NumArray } from "./strided";
import { decodeRow, encodeRow, is16, numelOf } from "./strided";

/** Contiguous float64/float32 row for a view, decoding 16-bit floats into a copy. */
function floatsOf(v: View, n: number): { arr: NumArray; off: number; wide: boolean; data: HostArray } {
  const data = dataOf(v);
  if (!is16(v.storage.dtype)) return { arr: data as NumArray, off: v.offset, wide: false, data };
  const buf = new Float64Array(n);
  decodeRow(data, v.storage.dtype, v.offset, 1, n, buf, 0);
  return { arr: buf, off: 0, wide: true, data };
}

export function adamw(
  params: View[],
  grads: View[],
  expAvg: View[],
  expAvgSq: View[],
  hyper: AdamWHyper,
  lowPrecision?: readonly (View | null)[],
): void {
  const { lr, beta1, beta2, eps, weightDecay, step } = hyper;
  const sign = hyper.maximize ? -1 : 1;
  const bc1 = 1 - Math.pow(beta1, step);
  const bc2 = 1 - Math.pow(beta2, step);
  const decay = 1 - lr * weightDecay;
  const c1 = 1 - beta1;
  const c2 = 1 - beta2;
  for (let t = 0; t < params.length; t++) {
    const n = numelOf(params[t].shape);
    const P = floatsOf(params[t], n);
    const G = floatsOf(grads[t], n);
    const Mv = floatsOf(expAvg[t], n);
    const V = floatsOf(expAvgSq[t], n);
    const p = P.arr;
    const g = G.arr;
    const m = Mv.arr;
    const v = V.arr;
    let po = P.off;
    let go = G.off;
    let mo = Mv.off;
    let vo = V.off;
    for (let i = 0; i < n; i++, po++, go++, mo++, vo++) {
      const gi = sign * g[go];
      const mi = beta1 * m[mo] + c1 * gi;
      const vi = beta2 * v[vo] + c2 * gi * gi;
      m[mo] = mi;
      v[vo] = vi;
      p[po] = p[po] * decay - (lr * (mi / bc1)) / (Math.sqrt(vi / bc2) + eps);
    }
    for (const [view, f] of [
      [params[t], P],
      [expAvg[t], Mv],
      [expAvgSq[t], V],
    ] as const) {
      if (f.wide) encodeRow(f.arr as FloatArray, 0, n, f.data, view.storage.dtype, view.offset, 1);
    }
    // The copy is the stored parameter rounded once more, as a cast of it would be.
    const lp = lowPrecision?.[t];
    if (lp) {
      const stored = floatsOf(params[t], n);
      const vals = stored.wide ? (stored.arr as FloatArray) : Float64Array.from((stored.arr as NumArray).subarray(stored.off, stored.off + n));
      encodeRow(vals, 0, n, dataOf(lp), lp.storage.dtype, lp.offset, 1);
    }
  }
}
