/**
 * Reductions (sum, max, min, argmax) into a keepdim-shaped output.
 *
 * sum/max/min walk x in its own memory order (dims sorted by stride) and accumulate into a
 * float64 buffer laid out like `out`, whose stride is 0 on reduced dims. Reducing the last dim
 * then becomes a scalar accumulation per row, and reducing leading dims (the bias-gradient
 * [N, D] -> [1, D] case) a row-wide `acc[j] += x[i, j]`: both stream x once, contiguously.
 * max/min propagate NaN as PyTorch does.
 */
import type { ReduceOp, View } from "../backend";
import { encodeElement } from "../dtype";
import { dataOf } from "./storage";
import type { NumArray } from "./strided";
import { RowWalker, decodeRow, is16, numelOf, storeView } from "./strided";

function reducedDims(x: View, out: View): boolean[] {
  return x.shape.map((s, d) => out.shape[d] === 1 && s !== 1);
}

export function reduce(op: ReduceOp, x: View, out: View): void {
  if (op === "argmax") {
    argmax(x, out);
    return;
  }
  const nd = x.shape.length;
  const red = reducedDims(x, out);
  const accStrides = new Array<number>(nd);
  for (let d = nd - 1, s = 1; d >= 0; d--) {
    accStrides[d] = red[d] ? 0 : s;
    s *= out.shape[d];
  }
  // Innermost = smallest |stride| of x, ties kept in dim order, so rows follow x's memory.
  const perm = [...Array(nd).keys()].sort((p, q) => Math.abs(x.strides[q]) - Math.abs(x.strides[p]) || p - q);
  const shape = perm.map((d) => x.shape[d]);
  const xStrides = perm.map((d) => x.strides[d]);
  const aStrides = perm.map((d) => accStrides[d]);

  const acc = new Float64Array(numelOf(out.shape));
  acc.fill(op === "sum" ? 0 : op === "max" ? -Infinity : Infinity);
  const w = new RowWalker(shape, [xStrides, aStrides], [x.offset, 0]);
  const n = w.n;
  const xd = dataOf(x);
  const wide = is16(x.storage.dtype);
  const buf = wide ? new Float64Array(n) : null;
  const [xs0, as] = w.inner;
  for (let r = 0; r < w.rows; r++, w.next()) {
    let xo = w.offsets[0];
    let ao = w.offsets[1];
    let xa = xd as NumArray;
    let xs = xs0;
    if (buf !== null) {
      decodeRow(xd, x.storage.dtype, xo, xs0, n, buf, 0);
      xa = buf;
      xo = 0;
      xs = 1;
    }
    if (as === 0) {
      let m = acc[ao];
      if (op === "sum") for (let i = 0; i < n; i++, xo += xs) m += xa[xo];
      else if (op === "max")
        for (let i = 0; i < n; i++, xo += xs) {
          const v = xa[xo];
          if (v > m || v !== v) m = v;
        }
      else
        for (let i = 0; i < n; i++, xo += xs) {
          const v = xa[xo];
          if (v < m || v !== v) m = v;
        }
      acc[ao] = m;
    } else if (op === "sum") {
      for (let i = 0; i < n; i++, xo += xs, ao += as) acc[ao] += xa[xo];
    } else if (op === "max") {
      for (let i = 0; i < n; i++, xo += xs, ao += as) {
        const v = xa[xo];
        if (v > acc[ao] || v !== v) acc[ao] = v;
      }
    } else {
      for (let i = 0; i < n; i++, xo += xs, ao += as) {
        const v = xa[xo];
        if (v < acc[ao] || v !== v) acc[ao] = v;
      }
    }
  }
  storeView(acc, out);
}

/** Index of the first maximum along the single reduced dim (NaN counts as the maximum, as in PyTorch). */
function argmax(x: View, out: View): void {
  const red = reducedDims(x, out);
  const dims = red.flatMap((r, d) => (r ? [d] : []));
  if (dims.length > 1) throw new RangeError("cpu backend: argmax reduces exactly one dimension");
  const od = dataOf(out);
  const odt = out.storage.dtype;
  if (dims.length === 0) {
    // Nothing to reduce: every index is 0.
    const w = new RowWalker(out.shape, [out.strides], [out.offset]);
    for (let r = 0; r < w.rows; r++, w.next())
      for (let i = 0; i < w.n; i++) od[w.offsets[0] + i * w.inner[0]] = encodeElement(odt, 0);
    return;
  }
  const rd = dims[0];
  const perm = [...x.shape.keys()].filter((d) => d !== rd).concat([rd]);
  const w = new RowWalker(
    perm.map((d) => x.shape[d]),
    [perm.map((d) => x.strides[d]), perm.map((d) => (d === rd ? 0 : out.strides[d]))],
    [x.offset, out.offset],
    "last",
  );
  const n = w.n;
  const xd = dataOf(x);
  const buf = new Float64Array(n);
  for (let r = 0; r < w.rows; r++, w.next()) {
    decodeRow(xd, x.storage.dtype, w.offsets[0], w.inner[0], n, buf, 0);
    let best = buf[0];
    let bi = 0;
    for (let i = 1; i < n; i++) {
      const v = buf[i];
      if (v > best || (v !== v && best === best)) {
        best = v;
        bi = i;
      }
    }
    od[w.offsets[1]] = encodeElement(odt, bi);
  }
}
