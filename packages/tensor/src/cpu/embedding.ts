/**
 * Embedding lookup (row gather) and its backward (row scatter-add).
 *
 * ids may have any shape; out / gy are read as numel(ids) rows of the embedding width. Ids are
 * range-checked up front so a bad id throws before any output is written.
 */
import type { View } from "../backend";
import { dataOf } from "./storage";
import type { NumArray } from "./strided";
import { RowWalker, decodeRow, encodeRow, is16, loadView } from "./strided";

function checkedIds(ids: View, rows: number, op: string): Float64Array {
  const v = loadView(ids);
  for (let i = 0; i < v.length; i++) {
    const id = v[i];
    if (!(id >= 0 && id < rows) || !Number.isInteger(id)) {
      throw new RangeError(`${op}: index ${id} is out of range for an embedding of ${rows} rows`);
    }
  }
  return v;
}

/** out[i, :] = weight[ids[i], :] */
export function embedding(weight: View, ids: View, out: View): void {
  const V = weight.shape[0];
  const [wrs, wcs] = weight.strides;
  const idv = checkedIds(ids, V, "embedding");
  const w = new RowWalker(out.shape, [out.strides], [out.offset], "last");
  const n = w.n;
  const wd = dataOf(weight);
  const od = dataOf(out);
  const wt = weight.storage.dtype;
  const ot = out.storage.dtype;
  const raw = wt === ot || (!is16(wt) && !is16(ot));
  const buf = raw ? null : new Float64Array(n);
  const os = w.inner[0];
  for (let r = 0; r < w.rows; r++, w.next()) {
    let wo = weight.offset + idv[r] * wrs;
    let oo = w.offsets[0];
    if (buf === null) {
      for (let j = 0; j < n; j++, wo += wcs, oo += os) od[oo] = wd[wo];
    } else {
      decodeRow(wd, wt, wo, wcs, n, buf, 0);
      encodeRow(buf, 0, n, od, ot, oo, os);
    }
  }
}

/** gw[ids[i], :] += gy[i, :] */
export function embeddingBackward(gy: View, ids: View, gw: View): void {
  const V = gw.shape[0];
  const [grs, gcs] = gw.strides;
  const idv = checkedIds(ids, V, "embeddingBackward");
  const w = new RowWalker(gy.shape, [gy.strides], [gy.offset], "last");
  const n = w.n;
  const gyd = dataOf(gy);
  const gwd = dataOf(gw);
  const yt = gy.storage.dtype;
  const wt = gw.storage.dtype;
  const direct = !is16(yt) && !is16(wt);
  const yb = new Float64Array(n);
  const wb = new Float64Array(n);
  const ys = w.inner[0];
  for (let r = 0; r < w.rows; r++, w.next()) {
    let wo = gw.offset + idv[r] * grs;
    let yo = w.offsets[0];
    if (direct) {
      const a = gwd as NumArray;
      const b = gyd as NumArray;
      for (let j = 0; j < n; j++, wo += gcs, yo += ys) a[wo] += b[yo];
    } else {
      decodeRow(gyd, yt, yo, ys, n, yb, 0);
      decodeRow(gwd, wt, wo, gcs, n, wb, 0);
      for (let j = 0; j < n; j++) wb[j] += yb[j];
      encodeRow(wb, 0, n, gwd, wt, wo, gcs);
    }
  }
}
