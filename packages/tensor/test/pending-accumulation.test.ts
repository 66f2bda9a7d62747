// A layer norm in a residual stream adds its input gradient into the gradient the engine already
// holds for that input (BackwardContext.takePending), in the same pass, instead of a separate add.
// Values must be exactly those of the plain sum, and the engine must only hand over a gradient
// nothing else shares.
import { afterEach, describe, expect, it, vi } from "vitest";
import * as T from "../src";
import { cpuBackend } from "../src";
import { gradcheck } from "../src/testing";

const gen = new T.Generator(9);
const r = (...shape: number[]): T.Tensor => T.randn(shape, { dtype: "float64", generator: gen });

/** x -> x + 1 * layerNorm(x): the pre-norm residual shape (the branch's gradient is a new tensor). */
const residual = (x0: T.Tensor, w: T.Tensor, b: T.Tensor): T.Tensor => {
  const x = T.mul(x0, 1.5);
  return T.add(x, T.mul(T.layerNorm(x, 8, w, b), 1));
};

describe("gradient accumulation inside layer norm's backward", () => {
  afterEach(() => vi.restoreAllMocks());

  it("gives the gradients of finite differences", () => {
    const res = gradcheck(residual, [r(3, 8), r(8), r(8)]);
    expect(res.maxError, JSON.stringify(res.worst)).toBeLessThan(1e-6);
  });

  it("takes the residual gradient when nothing else shares it, and matches the separate sum exactly", () => {
    const spy = vi.spyOn(cpuBackend(), "layerNormBackward");
    const x0 = r(4, 8).requiresGrad_();
    const [w, b] = [r(8), r(8)];
    const probe = r(4, 8);
    T.sum(T.mul(residual(x0, w, b), probe)).backward();
    expect(spy.mock.calls.some((c) => c[8] === true)).toBe(true);
    // The same graph with the residual gradient made by a second, separate layer norm call.
    const x1 = x0.detach().requiresGrad_();
    const x = T.mul(x1, 1.5);
    const branch = T.mul(T.layerNorm(x, 8, w, b), 1);
    T.sum(T.mul(T.add(T.mul(x, 1), branch), probe)).backward();
    const a = x0.grad!.toArray();
    const c = x1.grad!.toArray();
    for (let i = 0; i < a.length; i++) expect(a[i]).toBeCloseTo(c[i], 13);
  });

  it("leaves a gradient that another consumer still shares alone", () => {
    const spy = vi.spyOn(cpuBackend(), "layerNormBackward");
    const x0 = r(2, 8).requiresGrad_();
    // add's backward hands the same gradient to both inputs: while layer norm's own incoming
    // gradient is that tensor, the pending one for x is shared and must not be written in place.
    const x = T.mul(x0, 2);
    const y = T.add(x, T.layerNorm(x, 8));
    T.sum(T.mul(y, r(2, 8))).backward();
    expect(spy.mock.calls.every((c) => c[8] !== true)).toBe(true);
    const res = gradcheck((a: T.Tensor) => {
      const xa = T.mul(a, 2);
      return T.add(xa, T.layerNorm(xa, 8));
    }, [r(2, 8)]);
    expect(res.maxError, JSON.stringify(res.worst)).toBeLessThan(1e-6);
  });
});
