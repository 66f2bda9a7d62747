/** Softmax / log-softmax forward vs float64 reference, backward vs finite differences of forward. */
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

function refSoftmax(x: Float64Array, n: number, log: boolean): Float64Array {
  const out = new Float64Array(x.length);
  for (let r = 0; r < x.length / n; r++) {
    let m = -Infinity;
    for (let j = 0; j < n; j++) m = Math.max(m, x[r * n + j]);
    let s = 0;
    for (let j = 0; j < n; j++) s += Math.exp(x[r * n + j] - m);
    for (let j = 0; j < n; j++) {
      const v = x[r * n + j] - m;
      out[r * n + j] = log ? v - Math.log(s) : Math.exp(v) / s;
    }
  }
  return out;
}

describe("cpu softmax", () => {
  for (const log of [false, true]) {
    const name = log ? "log-softmax" : "softmax";
    it(`${name} forward on strided inputs, stable for large logits`, () => {
      const r = rng(log ? 1 : 2);
      const shape = [3, 4, 7];
      const v = randArray(r, 84, -4, 4);
      v[0] = 1000;
      v[1] = 999;
      for (const layout of [makeView, transposedView, paddedView]) {
        const x = layout(v, shape, "float32");
        const out = empty(shape);
        be.softmax(x, out, log);
        expectClose(values(out), refSoftmax(values(x), 7, log), 3e-7, 1e-7);
      }
    });

    it(`${name} backward matches finite differences (float64)`, () => {
      const r = rng(log ? 3 : 4);
      const shape = [2, 3, 5];
      const xv = randArray(r, 30);
      const R = randArray(r, 30);
      const forward = (): Float64Array => {
        const out = empty(shape, "float64");
        be.softmax(makeView(xv, shape, "float64"), out, log);
        return values(out);
      };
      const y = forward();
      const gx = empty(shape, "float64");
      // Feed y and gy through non-contiguous views too.
      be.softmaxBackward(transposedView(y, shape, "float64"), paddedView(R, shape, "float64"), gx, log);
      const num = numericGrad(xv, () => dot(forward(), R));
      expectClose(values(gx), num, 1e-6, 1e-8);
    });
  }

  it("writes bfloat16 outputs", () => {
    const x = makeView([1, 2, 3, 4], [1, 4], "bfloat16");
    const out: View = empty([1, 4], "bfloat16");
    be.softmax(x, out, false);
    const got = values(out);
    expectClose(got, refSoftmax(new Float64Array([1, 2, 3, 4]), 4, false), 4e-3, 0);
    expect(got.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 2);
  });
});
