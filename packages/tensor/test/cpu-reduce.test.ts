/** Reductions vs float64 references over various dims and layouts, plus argmax tie/NaN rules. */
import { describe, expect, it } from "vitest";
import type { ReduceOp, View } from "../src/backend";
import type { DType } from "../src/dtype";
import {
  be,
  contiguousStrides,
  empty,
  expectClose,
  makeView,
  numel,
  paddedView,
  randArray,
  rng,
  roundTo,
  transposedView,
  unravel,
  values,
} from "./cpu-helpers";

function refReduce(op: ReduceOp, v: Float64Array, shape: number[], outShape: number[]): Float64Array {
  const out = new Float64Array(numel(outShape)).fill(op === "sum" ? 0 : op === "max" ? -Infinity : Infinity);
  const os = contiguousStrides(outShape);
  for (let i = 0; i < v.length; i++) {
    const idx = unravel(i, shape);
    let o = 0;
    for (let d = 0; d < shape.length; d++) o += (outShape[d] === 1 ? 0 : idx[d]) * os[d];
    if (op === "sum") out[o] += v[i];
    else if (op === "max") out[o] = Math.max(out[o], v[i]);
    else out[o] = Math.min(out[o], v[i]);
  }
  return out;
}

const SHAPE = [4, 5, 6];
const CASES: number[][] = [
  [4, 5, 1],
  [1, 5, 6],
  [4, 1, 6],
  [1, 1, 6],
  [4, 1, 1],
  [1, 5, 1],
  [1, 1, 1],
  [4, 5, 6],
];

describe("cpu reduce sum/max/min", () => {
  for (const op of ["sum", "max", "min"] as ReduceOp[]) {
    for (const outShape of CASES) {
      it(`${op} [${SHAPE}] -> [${outShape}] on contiguous, transposed and padded inputs`, () => {
        const r = rng(outShape.join("").length * 31 + op.length);
        const v = randArray(r, numel(SHAPE), -5, 5);
        for (const layout of [makeView, transposedView, paddedView]) {
          for (const dtype of ["float32", "float64", "bfloat16"] as DType[]) {
            const x = layout(v, SHAPE, dtype);
            const out = empty(outShape, dtype);
            be.reduce(op, x, out);
            const want = refReduce(op, values(x), SHAPE, outShape).map((t) => roundTo(dtype, t));
            // Sums accumulate in float64 then round once; tiny reassociation error only.
            expectClose(values(out), want, dtype === "bfloat16" ? 8e-3 : 1e-7, 1e-6);
          }
        }
      });
    }
  }

  it("accumulates in float64 (float32 sum of many ones and a big value)", () => {
    const n = 1 << 17;
    const v = new Float64Array(n).fill(1);
    v[0] = 2 ** 24;
    const out = empty([1]);
    be.reduce("sum", makeView(v, [n]), out);
    expect(values(out)[0]).toBe(Math.fround(2 ** 24 + n - 1));
  });

  it("reduces the bias-gradient case [N, D] -> [1, D] quickly", () => {
    const N = 2048;
    const D = 384;
    const x = makeView(randArray(rng(9), N * D), [N, D]);
    const out = empty([1, D]);
    const t0 = performance.now();
    be.reduce("sum", x, out);
    const dt = performance.now() - t0;
    expectClose(values(out), refReduce("sum", values(x), [N, D], [1, D]), 1e-6, 1e-5);
    expect(dt).toBeLessThan(200);
  });

  it("propagates NaN through max and min", () => {
    const x = makeView([1, NaN, 3, 4, 5, 6], [2, 3]);
    for (const op of ["max", "min"] as ReduceOp[]) {
      const out = empty([2, 1]);
      be.reduce(op, x, out);
      const got = values(out);
      expect(Number.isNaN(got[0])).toBe(true);
      expect(got[1]).toBe(op === "max" ? 6 : 4);
    }
  });

  it("reads a stride-0 (expanded) input", () => {
    const base = makeView([1, 2, 3], [1, 3]);
    const x: View = { ...base, shape: [4, 3], strides: [0, 1] };
    const out = empty([1, 3]);
    be.reduce("sum", x, out);
    expect(Array.from(values(out))).toEqual([4, 8, 12]);
  });
});

describe("cpu argmax", () => {
  it("returns the first index of the maximum along one dim", () => {
    const r = rng(77);
    // Quantised values so ties happen.
    const v = randArray(r, numel(SHAPE), -3, 3).map((t) => Math.round(t));
    for (const dim of [0, 1, 2]) {
      const outShape = SHAPE.map((s, d) => (d === dim ? 1 : s));
      for (const layout of [makeView, transposedView]) {
        const x = layout(v, SHAPE, "float32");
        const out = empty(outShape, "int32");
        be.reduce("argmax", x, out);
        const want = new Float64Array(numel(outShape));
        for (let o = 0; o < want.length; o++) {
          const idx = unravel(o, outShape);
          let best = -Infinity;
          let bi = -1;
          for (let k = 0; k < SHAPE[dim]; k++) {
            idx[dim] = k;
            const flat = idx[0] * 30 + idx[1] * 6 + idx[2];
            if (v[flat] > best) {
              best = v[flat];
              bi = k;
            }
          }
          want[o] = bi;
        }
        expect(Array.from(values(out))).toEqual(Array.from(want));
      }
    }
  });

  it("treats NaN as the maximum", () => {
    const out = empty([2, 1], "int32");
    be.reduce("argmax", makeView([1, 9, NaN, NaN, 2, NaN], [2, 3], "bfloat16"), out);
    expect(Array.from(values(out))).toEqual([2, 0]);
  });
});
