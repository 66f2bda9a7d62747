/**
 * Layer norm over the last dim (biased variance), saving per-row mean and rstd for backward.
 *
 * Statistics use two passes over a float64 copy of the row (mean, then squared deviations):
 * one pass with E[x^2] - E[x]^2 cancels badly for rows with a large mean. The weight and bias
 * gradients are summed over all rows in float64 and added to gw/gb once at the end.
 */
import type { View } from "../backend";
import { dataOf } from "./storage";
import { RowWalker, decodeRow, encodeRow, loadView, storeView, stridesFor } from "./strided";

export function layerNorm(
  x: View,
  weight: View | null,
  bias: View | null,
  eps: number,
  out: View,
  mean: View,
  rstd: View,
): void {
  const shape = out.shape;
  const w = new RowWalker(shape, [out.strides, stridesFor(x, shape)], [out.offset, x.offset], "last");
  const n = w.n;
  if (w.rows === 0) return;
  const gamma = weight ? loadView(weight) : null;
  const beta = bias ? loadView(bias) : null;
  const xd = dataOf(x);
  const od = dataOf(out);
  const buf = new Float64Array(n);
  const means = new Float64Array(w.rows);
  const rstds = new Float64Array(w.rows);
  for (let r = 0; r < w.rows; r++, w.next()) {
    decodeRow(xd, x.storage.dtype, w.offsets[1], w.inner[1], n, buf, 0);
    let s = 0;
    for (let i = 0; i < n; i++) s += buf[i];
    const mu = s / n;
    let v = 0;
    for (let i = 0; i < n; i++) {
      const d = buf[i] - mu;
      v += d * d;
    }
    const rs = 1 / Math.sqrt(v / n + eps);
    means[r] = mu;
    rstds[r] = rs;
    for (let i = 0; i < n; i++) buf[i] = (buf[i] - mu) * rs;
    if (gamma !== null) for (let i = 0; i < n; i++) buf[i] *= gamma[i];
    if (beta !== null) for (let i = 0; i < n; i++) buf[i] += beta[i];
    encodeRow(buf, 0, n, od, out.storage.dtype, w.offsets[0], w.inner[0]);
  }
  storeView(means, mean);
  storeView(rstds, rstd);
}

/**
 * gx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = gy * weight and xhat = (x - mean) * rstd;
 * gw += sum_rows(gy * xhat), gb += sum_rows(gy). A null gx (a split backward's weight pass) skips
 * its part; gw and gb are summed the same way either way.
 */
export function layerNormBackward(
  gy: View,
  x: View,
  weight: View | null,
  mean: View,
  rstd: View,
  gx: View | null,
  gw: View | null,
  gb: View | null,
  accumulateGx = false,
): void {
  // Without gx, x stands in as the walker's first operand (its slot is never written).
  const out = gx ?? x;
  const shape = out.shape;
  const w = new RowWalker(
    shape,
    [out.strides, stridesFor(x, shape), stridesFor(gy, shape)],
    [out.offset, x.offset, gy.offset],
    "last",
  );
  const n = w.n;
  const gamma = weight ? loadView(weight) : null;
  const means = loadView(mean);
  const rstds = loadView(rstd);
  const xd = dataOf(x);
  const gyd = dataOf(gy);
  const gxd = gx ? dataOf(gx) : null;
  const xb = new Float64Array(n);
  const gyb = new Float64Array(n);
  const gwAcc = gw ? new Float64Array(n) : null;
  const gbAcc = gb ? new Float64Array(n) : null;
  for (let r = 0; r < w.rows; r++, w.next()) {
    decodeRow(xd, x.storage.dtype, w.offsets[1], w.inner[1], n, xb, 0);
    decodeRow(gyd, gy.storage.dtype, w.offsets[2], w.inner[2], n, gyb, 0);
    const mu = means[r];
    const rs = rstds[r];
    let s1 = 0;
    let s2 = 0;
    for (let i = 0; i < n; i++) {
      const xh = (xb[i] - mu) * rs;
      xb[i] = xh;
      const g = gamma !== null ? gyb[i] * gamma[i] : gyb[i];
      s1 += g;
      s2 += g * xh;
    }
    if (gwAcc !== null) for (let i = 0; i < n; i++) gwAcc[i] += gyb[i] * xb[i];
    if (gbAcc !== null) for (let i = 0; i < n; i++) gbAcc[i] += gyb[i];
    if (gx === null || gxd === null) continue;
    const m1 = s1 / n;
    const m2 = s2 / n;
    for (let i = 0; i < n; i++) {
      const g = gamma !== null ? gyb[i] * gamma[i] : gyb[i];
      gyb[i] = rs * (g - m1 - xb[i] * m2);
    }
    if (accumulateGx) {
      // xb is free again: the gradient already in gx, added before the one rounding on store.
      decodeRow(gxd, gx.storage.dtype, w.offsets[0], w.inner[0], n, xb, 0);
      for (let i = 0; i < n; i++) gyb[i] += xb[i];
    }
    encodeRow(gyb, 0, n, gxd, gx.storage.dtype, w.offsets[0], w.inner[0]);
  }
  if (gw !== null && gwAcc !== null) accumulateInto(gw, gwAcc);
  if (gb !== null && gbAcc !== null) accumulateInto(gb, gbAcc);
}

function accumulateInto(view: View, add: Float64Array): void {
  const cur = loadView(view);
  for (let i = 0; i < cur.length; i++) cur[i] += add[i];
  storeView(cur, view);
}
