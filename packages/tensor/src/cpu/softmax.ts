/**
 * Softmax and log-softmax over the last dim, and their backward.
 *
 * Rows are decoded to float64 and shifted by their max before exponentiating, so large logits
 * cannot overflow and the float32 result is correctly rounded from a float64 computation.
 */
import type { View } from "../backend";
import { dataOf } from "./storage";
import { RowWalker, decodeRow, encodeRow, stridesFor } from "./strided";

export function softmax(x: View, out: View, log: boolean): void {
  const shape = out.shape;
  const w = new RowWalker(shape, [out.strides, stridesFor(x, shape)], [out.offset, x.offset], "last");
  const n = w.n;
  if (w.rows === 0 || n === 0) return;
  const xd = dataOf(x);
  const od = dataOf(out);
  const buf = new Float64Array(n);
  for (let r = 0; r < w.rows; r++, w.next()) {
    decodeRow(xd, x.storage.dtype, w.offsets[1], w.inner[1], n, buf, 0);
    let m = -Infinity;
    for (let i = 0; i < n; i++) if (buf[i] > m) m = buf[i];
    let s = 0;
    if (log) {
      for (let i = 0; i < n; i++) s += Math.exp(buf[i] - m);
      const shift = m + Math.log(s);
      for (let i = 0; i < n; i++) buf[i] -= shift;
    } else {
      for (let i = 0; i < n; i++) {
        const e = Math.exp(buf[i] - m);
        buf[i] = e;
        s += e;
      }
      const inv = 1 / s;
      for (let i = 0; i < n; i++) buf[i] *= inv;
    }
    encodeRow(buf, 0, n, od, out.storage.dtype, w.offsets[0], w.inner[0]);
  }
}

/** softmax: gx = y * (gy - sum(gy * y)); log-softmax: gx = gy - exp(y) * sum(gy). */
export function softmaxBackward(y: View, gy: View, gx: View, log: boolean): void {
  const shape = gx.shape;
  const w = new RowWalker(
    shape,
    [gx.strides, stridesFor(y, shape), stridesFor(gy, shape)],
    [gx.offset, y.offset, gy.offset],
    "last",
  );
  const n = w.n;
  if (w.rows === 0 || n === 0) return;
  const yd = dataOf(y);
  const gyd = dataOf(gy);
  const gxd = dataOf(gx);
  const yb = new Float64Array(n);
  const gb = new Float64Array(n);
  for (let r = 0; r < w.rows; r++, w.next()) {
    decodeRow(yd, y.storage.dtype, w.offsets[1], w.inner[1], n, yb, 0);
    decodeRow(gyd, gy.storage.dtype, w.offsets[2], w.inner[2], n, gb, 0);
    let s = 0;
    if (log) {
      for (let i = 0; i < n; i++) s += gb[i];
      for (let i = 0; i < n; i++) gb[i] -= Math.exp(yb[i]) * s;
    } else {
      for (let i = 0; i < n; i++) s += gb[i] * yb[i];
      for (let i = 0; i < n; i++) gb[i] = yb[i] * (gb[i] - s);
    }
    encodeRow(gb, 0, n, gxd, gx.storage.dtype, w.offsets[0], w.inner[0]);
  }
}
