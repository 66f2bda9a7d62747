/**
 * Layer norm forward vs float64 reference; backward (gx, and accumulated gw/gb) vs finite differences,
 * and split into its input and weight parts (a split backward's two passes) vs one call.
 */
import { describe, expect, it } from "vitest";
import type { View } from "../src/backend";
import {
  be,
  dot,
  empty,
  expectClose,
  makeView,
  numericGrad,
  paddedView,
  randArray,
  rng,
  transposedView,
  values,
} from "./cpu-helpers";

function refLayerNorm(x: Float64Array, D: number, w: Float64Array | null, b: Float64Array | null, eps: number) {
  const rows = x.length / D;
  const out = new Float64Array(x.length);
  const mean = new Float64Array(rows);
  const rstd = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let m = 0;
    for (let j = 0; j < D; j++) m += x[r * D + j];
    m /= D;
    let v = 0;
    for (let j = 0; j < D; j++) v += (x[r * D + j] - m) ** 2;
    v /= D;
    const rs = 1 / Math.sqrt(v + eps);
    mean[r] = m;
    rstd[r] = rs;
    for (let j = 0; j < D; j++) out[r * D + j] = (x[r * D + j] - m) * rs * (w ? w[j] : 1) + (b ? b[j] : 0);
  }
  return { out, mean, rstd };
}

describe("cpu layerNorm", () => {
  it("forward with and without affine parameters, strided input, saved stats", () => {
    const r = rng(10);
    const shape = [3, 4, 9];
    const xv = randArray(r, 108, -3, 5);
    const wv = randArray(r, 9);
    const bv = randArray(r, 9);
    for (const layout of [makeView, transposedView, paddedView]) {
      for (const affine of [true, false]) {
        const x = layout(xv, shape, "float32");
        const w = affine ? makeView(wv, [9], "float32") : null;
        const b = affine ? paddedView(bv, [9], "float32") : null;
        const out = empty(shape);
        const mean = empty([12]);
        const rstd = empty([12]);
        be.layerNorm(x, w, b, 1e-5, out, mean, rstd);
        const ref = refLayerNorm(values(x), 9, affine ? values(w!) : null, affine ? values(b!) : null, 1e-5);
        expectClose(values(out), ref.out, 2e-6, 2e-6);
        expectClose(values(mean), ref.mean, 1e-6, 1e-7);
        expectClose(values(rstd), ref.rstd, 1e-6, 1e-7);
      }
    }
  });

  for (const affine of [true, false]) {
    it(`backward ${affine ? "with" : "without"} weight matches finite differences, accumulating gw/gb`, () => {
      const r = rng(affine ? 11 : 12);
      const shape = [2, 3, 6];
      const xv = randArray(r, 36);
      const wv = randArray(r, 6);
      const bv = randArray(r, 6);
      const R = randArray(r, 36);
      const eps = 1e-5;
      const mean = empty([6], "float64");
      const rstd = empty([6], "float64");
      const forward = (): Float64Array => {
        const out = empty(shape, "float64");
        const w = affine ? makeView(wv, [6], "float64") : null;
        const b = affine ? makeView(bv, [6], "float64") : null;
        be.layerNorm(makeView(xv, shape, "float64"), w, b, eps, out, mean, rstd);
        return values(out);
      };
      forward();
      const gx = empty(shape, "float64");
      const gw0 = randArray(r, 6);
      const gb0 = randArray(r, 6);
      const gw: View | null = affine ? makeView(gw0, [6], "float64") : null;
      const gb: View | null = affine ? makeView(gb0, [6], "float64") : null;
      be.layerNormBackward(
        transposedView(R, shape, "float64"),
        paddedView(xv, shape, "float64"),
        affine ? makeView(wv, [6], "float64") : null,
        mean,
        rstd,
        gx,
        gw,
        gb,
      );
      const loss = () => dot(forward(), R);
      expectClose(values(gx), numericGrad(xv, loss), 1e-6, 1e-7);
      if (affine) {
        const numW = numericGrad(wv, loss);
        const numB = numericGrad(bv, loss);
        expectClose(values(gw!), numW.map((g, i) => g + gw0[i]), 1e-6, 1e-7);
        expectClose(values(gb!), numB.map((g, i) => g + gb0[i]), 1e-6, 1e-7);
      }
    });
  }

  it("backward split in two calls (gx alone, then gw and gb alone) gives one call's values bit for bit", () => {
    const r = rng(13);
    const shape = [5, 12];
    const [xv, wv, gyv, gw0, gb0] = [60, 12, 60, 12, 12].map((n) => randArray(r, n));
    for (const dtype of ["float32", "bfloat16"] as const) {
      const x = paddedView(xv, shape, dtype);
      const w = makeView(wv, [12], "float32");
      const mean = empty([5]);
      const rstd = empty([5]);
      be.layerNorm(x, w, null, 1e-5, empty(shape, dtype), mean, rstd);
      const gy = transposedView(gyv, shape, dtype);
      const params = () => [makeView(gw0, [12], "float32"), makeView(gb0, [12], "float32")];
      const [gw, gb] = params();
      const gx = empty(shape, dtype);
      be.layerNormBackward(gy, x, w, mean, rstd, gx, gw, gb);
      const [gwSplit, gbSplit] = params();
      const gxSplit = empty(shape, dtype);
      be.layerNormBackward(gy, x, w, mean, rstd, gxSplit, null, null);
      be.layerNormBackward(gy, x, w, mean, rstd, null, gwSplit, gbSplit);
      for (const [one, two] of [[gx, gxSplit], [gw, gwSplit], [gb, gbSplit]]) {
        const [a, b] = [values(one), values(two)];
        expect(a.findIndex((v, i) => !Object.is(v, b[i]))).toBe(-1);
      }
    }
  });
});
