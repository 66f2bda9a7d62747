/** Fused AdamW vs a hand-written scalar loop of PyTorch's formula, over several steps and dtypes. */
import { describe, it } from "vitest";
import type { AdamWHyper, View } from "../src/backend";
import type { DType } from "../src/dtype";
import { be, expectClose, makeView, randArray, rng, values } from "./cpu-helpers";

function refStep(p: Float64Array, g: Float64Array, m: Float64Array, v: Float64Array, h: AdamWHyper, round: (x: number) => number) {
  for (let i = 0; i < p.length; i++) {
    const gi = h.maximize ? -g[i] : g[i];
    let pi = p[i];
    pi -= h.lr * h.weightDecay * pi;
    m[i] = h.beta1 * m[i] + (1 - h.beta1) * gi;
    v[i] = h.beta2 * v[i] + (1 - h.beta2) * gi * gi;
    const mhat = m[i] / (1 - h.beta1 ** h.step);
    const vhat = v[i] / (1 - h.beta2 ** h.step);
    pi -= (h.lr * mhat) / (Math.sqrt(vhat) + h.eps);
    p[i] = round(pi);
    m[i] = round(m[i]);
    v[i] = round(v[i]);
  }
}

describe("cpu adamw", () => {
  const cases: [DType, DType, boolean][] = [
    ["float64", "float64", false],
    ["float64", "float64", true],
    ["float32", "float32", false],
    ["float32", "bfloat16", false],
  ];
  for (const [pt, gt, maximize] of cases) {
    it(`params ${pt}, grads ${gt}${maximize ? ", maximize" : ""}: three steps over two tensors`, () => {
      const r = rng(pt.length + gt.length * 3 + (maximize ? 1 : 0));
      const sizes = [37, 5];
      const round = pt === "float32" ? Math.fround : (x: number) => x;
      const refP = sizes.map((n) => randArray(r, n).map(round));
      const refM = sizes.map((n) => new Float64Array(n));
      const refV = sizes.map((n) => new Float64Array(n));
      const params: View[] = refP.map((p) => makeView(p, [p.length], pt));
      const expAvg: View[] = sizes.map((n) => makeView(new Float64Array(n), [n], pt));
      const expAvgSq: View[] = sizes.map((n) => makeView(new Float64Array(n), [n], pt));
      for (let step = 1; step <= 3; step++) {
        const hyper: AdamWHyper = { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step, maximize };
        const grads = sizes.map((n) => makeView(randArray(r, n), [n], gt));
        be.adamw(params, grads, expAvg, expAvgSq, hyper);
        sizes.forEach((_, t) => refStep(refP[t], values(grads[t]), refM[t], refV[t], hyper, round));
      }
      const tol = pt === "float64" ? 1e-12 : 2e-6;
      sizes.forEach((_, t) => {
        expectClose(values(params[t]), refP[t], tol, tol);
        expectClose(values(expAvg[t]), refM[t], tol, tol);
        expectClose(values(expAvgSq[t]), refV[t], tol, tol);
      });
    });
  }
});
