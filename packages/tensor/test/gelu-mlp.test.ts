// geluMlp (one node, GELU in the products' epilogues) and linear's fused parameter gradients must
// give the values and gradients of the plain composition, and under autocast hand fp32 parameters
// fp32 gradients.
import { describe, expect, it } from "vitest";
import * as T from "../src";

const gen = new T.Generator(11);
const r = (shape: number[], dtype: T.DType = "float64"): T.Tensor => T.randn(shape, { dtype, generator: gen });

function grads(fn: (...t: T.Tensor[]) => T.Tensor, inputs: T.Tensor[], probe: T.Tensor): { y: number[]; g: (number[] | null)[]; dtypes: (string | null)[] } {
  const leaves = inputs.map((t) => t.detach().requiresGrad_());
  const y = fn(...leaves);
  T.sum(T.mul(T.cast(y, "float64"), probe)).backward();
  return { y: T.cast(y, "float64").toArray(), g: leaves.map((l) => (l.grad ? T.cast(l.grad, "float64").toArray() : null)), dtypes: leaves.map((l) => l.grad?.dtype ?? null) };
}

function expectClose(a: number[], b: number[], tol: number): void {
  expect(a.length).toBe(b.length);
  const err = Math.sqrt(a.reduce((s, v, i) => s + (v - b[i]) ** 2, 0) / Math.max(b.reduce((s, v) => s + v * v, 0), 1e-300));
  expect(err).toBeLessThan(tol);
}

const composed = (x: T.Tensor, w1: T.Tensor, b1: T.Tensor, w2: T.Tensor, b2: T.Tensor): T.Tensor => T.linear(T.gelu(T.linear(x, w1, b1)), w2, b2);

describe("geluMlp", () => {
  it("matches linear -> gelu -> linear in float64, values and every gradient", () => {
    const ins = [r([2, 3, 8]), r([12, 8]), r([12]), r([8, 12]), r([8])];
    const probe = r([2, 3, 8]);
    const ref = grads(composed, ins, probe);
    const got = grads((x, w1, b1, w2, b2) => T.geluMlp(x, w1, b1, w2, b2), ins, probe);
    expectClose(got.y, ref.y, 1e-13);
    for (let i = 0; i < ins.length; i++) expectClose(got.g[i]!, ref.g[i]!, 1e-12);
  });

  it("works without biases", () => {
    const ins = [r([5, 4]), r([6, 4]), r([3, 6])];
    const probe = r([5, 3]);
    const ref = grads((x, w1, w2) => T.linear(T.gelu(T.linear(x, w1)), w2), ins, probe);
    const got = grads((x, w1, w2) => T.geluMlp(x, w1, null, w2, null), ins, probe);
    expectClose(got.y, ref.y, 1e-13);
    for (let i = 0; i < ins.length; i++) expectClose(got.g[i]!, ref.g[i]!, 1e-12);
  });

  it("under bf16 autocast gives fp32 parameters fp32 gradients, close to the float64 result", () => {
    const ins64 = [r([4, 16]), r([32, 16]), r([32]), r([16, 32]), r([16])];
    const probe = r([4, 16]);
    const ref = grads(composed, ins64, probe);
    const ins32 = ins64.map((t) => T.cast(t, "float32"));
    const got = T.autocast("bfloat16", () => grads((x, w1, b1, w2, b2) => T.geluMlp(x, w1, b1, w2, b2), ins32, probe));
    expect(got.dtypes).toEqual(["float32", "float32", "float32", "float32", "float32"]);
    expectClose(got.y, ref.y, 2e-2);
    for (let i = 0; i < ins64.length; i++) expectClose(got.g[i]!, ref.g[i]!, 3e-2);
  });

  it("names the mismatched field", () => {
    expect(() => T.geluMlp(r([2, 8]), r([12, 8]), r([11]), r([8, 12]), r([8]))).toThrow(/geluMlp: b1 must have shape \[12\], got \[11\]/);
    expect(() => T.geluMlp(r([2, 7]), r([12, 8]), null, r([8, 12]), null)).toThrow(/x must end in 8 features/);
    expect(() => T.geluMlp(r([2, 8]), r([12, 8]), null, r([8, 10]), null)).toThrow(/w2 must have shape \[8, 12\], got \[8, 10\]/);
  });
});

describe("linear parameter gradients", () => {
  it("under bf16 autocast arrive in fp32 for fp32 parameters and match float64 within bf16 rounding", () => {
    const ins64 = [r([3, 5, 16]), r([24, 16]), r([24])];
    const probe = r([3, 5, 24]);
    const ref = grads((x, w, b) => T.linear(x, w, b), ins64, probe);
    const got = T.autocast("bfloat16", () => grads((x, w, b) => T.linear(x, w, b), ins64.map((t) => T.cast(t, "float32")), probe));
    expect(got.dtypes).toEqual(["float32", "float32", "float32"]);
    for (let i = 0; i < 3; i++) expectClose(got.g[i]!, ref.g[i]!, 2e-2);
  });

  it("sums the bias gradient over every row of a batched input", () => {
    const x = r([2, 3, 4]);
    const w = r([5, 4]).requiresGrad_();
    const b = r([5]).requiresGrad_();
    T.sum(T.linear(x, w, b)).backward();
    expect(b.grad!.toArray()).toEqual([6, 6, 6, 6, 6]);
  });
});
