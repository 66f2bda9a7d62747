/** Embedding gather/scatter-add and cross entropy (ignore index, range errors, finite-difference backward). */
import { describe, expect, it } from "vitest";
import type { DType } from "../src/dtype";
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
  roundTo,
  transposedView,
  values,
} from "./cpu-helpers";

describe("cpu embedding", () => {
  const ids = [3, 0, 6, 3, 3, 1];
  it("gathers rows (strided weight, casting to the out dtype)", () => {
    const r = rng(20);
    const wv = randArray(r, 35);
    for (const [wt, ot] of [
      ["float32", "float32"],
      ["bfloat16", "float32"],
      ["float32", "bfloat16"],
      ["bfloat16", "bfloat16"],
    ] as [DType, DType][]) {
      const w = paddedView(wv, [7, 5], wt);
      const wr = values(w);
      const out = empty([2, 3, 5], ot);
      be.embedding(w, makeView(ids, [2, 3], "int32"), out);
      const want = ids.flatMap((id) => Array.from(wr.subarray(id * 5, id * 5 + 5)).map((v) => roundTo(ot, v)));
      expectClose(values(out), want, 0, 0);
    }
  });

  it("scatter-adds gradients with repeated ids", () => {
    const r = rng(21);
    for (const gt of ["float32", "float64", "bfloat16"] as DType[]) {
      const gw0 = randArray(r, 35);
      const gyv = randArray(r, 30);
      const gw = makeView(gw0, [7, 5], gt);
      const start = values(gw);
      const gy = transposedView(gyv, [6, 5], "float32");
      be.embeddingBackward(gy, makeView(ids, [6], "int32"), gw);
      const want = Array.from(start);
      const gyr = values(gy);
      ids.forEach((id, i) => {
        // Each scatter rounds to the gradient dtype, as the kernel's read-add-write does.
        for (let j = 0; j < 5; j++) want[id * 5 + j] = roundTo(gt, want[id * 5 + j] + gyr[i * 5 + j]);
      });
      expectClose(values(gw), want, 0, 0);
    }
  });

  it("throws on an out-of-range id", () => {
    const w = makeView(new Float64Array(10), [5, 2]);
    expect(() => be.embedding(w, makeView([1, 5], [2], "int32"), empty([2, 2]))).toThrow(RangeError);
    expect(() => be.embedding(w, makeView([-1], [1], "int32"), empty([1, 2]))).toThrow(/-1.*5 rows/);
  });
});

function refCrossEntropy(x: Float64Array, C: number, t: number[], ignore: number) {
  const N = t.length;
  const loss = new Float64Array(N);
  const lse = new Float64Array(N);
  for (let i = 0; i < N; i++) {
    let m = -Infinity;
    for (let j = 0; j < C; j++) m = Math.max(m, x[i * C + j]);
    let s = 0;
    for (let j = 0; j < C; j++) s += Math.exp(x[i * C + j] - m);
    lse[i] = m + Math.log(s);
    loss[i] = t[i] === ignore ? 0 : lse[i] - x[i * C + t[i]];
  }
  return { loss, lse };
}

describe("cpu crossEntropy", () => {
  const N = 6;
  const C = 5;
  const targets = [4, 0, -100, 2, 2, 1];

  it("forward loss and lse, ignore index gives 0", () => {
    const r = rng(30);
    const xv = randArray(r, N * C, -3, 3);
    xv[0] = 80; // stability
    const x = transposedView(xv, [N, C], "float32");
    const loss = empty([N]);
    const lse = empty([N]);
    be.crossEntropy(x, makeView(targets, [N], "int32"), -100, loss, lse);
    const ref = refCrossEntropy(values(x), C, targets, -100);
    expectClose(values(loss), ref.loss, 1e-6, 1e-6);
    expect(values(loss)[2]).toBe(0);
    expectClose(values(lse).filter((_, i) => i !== 2), ref.lse.filter((_, i) => i !== 2), 1e-6, 1e-6);
  });

  it("backward matches finite differences, zero on ignored rows", () => {
    const r = rng(31);
    const xv = randArray(r, N * C);
    const gl = randArray(r, N);
    const tv = makeView(targets, [N], "int32");
    const lse = empty([N], "float64");
    const forward = (): Float64Array => {
      const loss = empty([N], "float64");
      be.crossEntropy(makeView(xv, [N, C], "float64"), tv, -100, loss, lse);
      return values(loss);
    };
    forward();
    const g = empty([N, C], "float64");
    be.crossEntropyBackward(paddedView(xv, [N, C], "float64"), tv, lse, makeView(gl, [N], "float64"), -100, g);
    const num = numericGrad(xv, () => dot(forward(), gl));
    expectClose(values(g), num, 1e-6, 1e-8);
    expect(Array.from(values(g).subarray(2 * C, 3 * C))).toEqual([0, 0, 0, 0, 0]);
    // Mean reduction: one gloss value broadcast with stride 0.
    const g2 = empty([N, C], "float64");
    const gs = makeView([0.25], [1], "float64");
    be.crossEntropyBackward(makeView(xv, [N, C], "float64"), tv, lse, { ...gs, shape: [N], strides: [0] }, -100, g2);
    const num2 = numericGrad(xv, () => 0.25 * forward().reduce((a, b) => a + b, 0));
    expectClose(values(g2), num2, 1e-6, 1e-8);
  });

  it("throws a RangeError naming the bad target and the class count", () => {
    const x = makeView(new Float64Array(2 * C), [2, C]);
    const run = (t: number[]) => () => be.crossEntropy(x, makeView(t, [2], "int32"), -100, empty([2]), empty([2]));
    expect(run([0, 7])).toThrow(RangeError);
    expect(run([0, 7])).toThrow(/target 7\b.*5 classes/);
    expect(run([-1, 0])).toThrow(/target -1\b.*5 classes/);
    expect(run([-100, 4])).not.toThrow();
  });
});
