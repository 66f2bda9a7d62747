/**
 * Per-row cross entropy from logits, saving logsumexp for backward so the softmax is never
 * materialised. Targets are checked before anything is written: an out-of-range class is a data
 * bug that must surface with the bad value, not as NaN later.
 */
import type { View } from "../backend";
import { dataOf } from "./storage";
import { RowWalker, decodeRow, encodeRow, loadView, storeView } from "./strided";

function checkedTargets(targets: View, classes: number, ignoreIndex: number, op: string): Float64Array {
  const t = loadView(targets);
  for (let i = 0; i < t.length; i++) {
    const c = t[i];
    if (c === ignoreIndex) continue;
    if (!(c >= 0 && c < classes) || !Number.isInteger(c)) {
      throw new RangeError(`${op}: target ${c} at row ${i} is out of range for ${classes} classes`);
    }
  }
  return t;
}

/** loss[i] = logsumexp(logits[i]) - logits[i, t[i]] (0 where t[i] is ignoreIndex); lse[i] saved. */
export function crossEntropy(logits: View, targets: View, ignoreIndex: number, loss: View, lse: View): void {
  const C = logits.shape[logits.shape.length - 1];
  const t = checkedTargets(targets, C, ignoreIndex, "crossEntropy");
  const w = new RowWalker(logits.shape, [logits.strides], [logits.offset], "last");
  const xd = dataOf(logits);
  const buf = new Float64Array(C);
  const losses = new Float64Array(w.rows);
  const lses = new Float64Array(w.rows);
  for (let r = 0; r < w.rows; r++, w.next()) {
    decodeRow(xd, logits.storage.dtype, w.offsets[0], w.inner[0], C, buf, 0);
    let m = -Infinity;
    for (let j = 0; j < C; j++) if (buf[j] > m) m = buf[j];
    let s = 0;
    for (let j = 0; j < C; j++) s += Math.exp(buf[j] - m);
    const l = m + Math.log(s);
    lses[r] = l;
    losses[r] = t[r] === ignoreIndex ? 0 : l - buf[t[r]];
  }
  storeView(losses, loss);
  storeView(lses, lse);
}

/** glogits[i] = gloss[i] * (softmax(logits[i]) - onehot(t[i])), zero on ignored rows. */
export function crossEntropyBackward(
  logits: View,
  targets: View,
  lse: View,
  gloss: View,
  ignoreIndex: number,
  glogits: View,
): void {
  const C = logits.shape[logits.shape.length - 1];
  const t = checkedTargets(targets, C, ignoreIndex, "crossEntropyBackward");
  const lses = loadView(lse);
  const gl = loadView(gloss);
  const shape = glogits.shape;
  const w = new RowWalker(shape, [glogits.strides, logits.strides], [glogits.offset, logits.offset], "last");
  const xd = dataOf(logits);
  const gd = dataOf(glogits);
  const buf = new Float64Array(C);
  for (let r = 0; r < w.rows; r++, w.next()) {
    if (t[r] === ignoreIndex) {
      buf.fill(0);
    } else {
      decodeRow(xd, logits.storage.dtype, w.offsets[1], w.inner[1], C, buf, 0);
      // A scalar gloss (mean reduction) may arrive unexpanded.
      const g = gl.length === 1 ? gl[0] : gl[r];
      const l = lses[r];
      for (let j = 0; j < C; j++) buf[j] = g * Math.exp(buf[j] - l);
      buf[t[r]] -= g;
    }
    encodeRow(buf, 0, C, gd, glogits.storage.dtype, w.offsets[0], w.inner[0]);
  }
}
