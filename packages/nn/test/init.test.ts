// Initialisers: ranges, moments and determinism from a generator, and the layer defaults built on them.
import { describe, expect, it } from "vitest";
import { Generator, empty } from "@fulgur/tensor";
import {
  Embedding,
  LayerNorm,
  Linear,
  calculateGain,
  fanInAndFanOut,
  kaimingUniform_,
  normal_,
  truncNormal_,
  uniform_,
  xavierUniform_,
} from "../src/index";

const stats = (v: number[]): { mean: number; std: number; min: number; max: number } => {
  const mean = v.reduce((a, b) => a + b, 0) / v.length;
  const std = Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / v.length);
  return { mean, std, min: Math.min(...v), max: Math.max(...v) };
};

describe("init functions", () => {
  it("uniform_ fills [a, b) with the right mean, reproducibly from a generator", () => {
    const a = uniform_(empty([4000]), -2, 3, new Generator(5)).toArray();
    const s = stats(a);
    expect(s.min).toBeGreaterThanOrEqual(-2);
    expect(s.max).toBeLessThan(3);
    expect(s.mean).toBeCloseTo(0.5, 1);
    expect(uniform_(empty([4000]), -2, 3, new Generator(5)).toArray()).toEqual(a);
  });

  it("normal_ has the requested mean and standard deviation", () => {
    const s = stats(normal_(empty([20000]), 1.5, 0.5, new Generator(1)).toArray());
    expect(s.mean).toBeCloseTo(1.5, 1);
    expect(Math.abs(s.std - 0.5)).toBeLessThan(0.02);
  });

  it("truncNormal_ stays inside [a, b] with roughly the requested spread", () => {
    const s = stats(truncNormal_(empty([20000]), { std: 0.02, a: -0.04, b: 0.04, generator: new Generator(2) }).toArray());
    expect(s.min).toBeGreaterThanOrEqual(-0.04);
    expect(s.max).toBeLessThanOrEqual(0.04);
    // A normal truncated at ±2σ has standard deviation 0.8796σ.
    expect(Math.abs(s.std - 0.8796 * 0.02)).toBeLessThan(0.001);
  });

  it("kaiming and xavier bounds follow PyTorch's fan and gain rules", () => {
    expect(fanInAndFanOut([8, 3, 2, 2])).toEqual({ fanIn: 12, fanOut: 32 });
    expect(calculateGain("leaky_relu", Math.sqrt(5))).toBeCloseTo(Math.sqrt(1 / 3), 15);
    const k = stats(kaimingUniform_(empty([64, 100]), { a: Math.sqrt(5), generator: new Generator(3) }).toArray());
    expect(k.max).toBeLessThanOrEqual(0.1);
    expect(k.max).toBeGreaterThan(0.098);
    const x = stats(xavierUniform_(empty([30, 70]), { generator: new Generator(4) }).toArray());
    expect(x.max).toBeLessThanOrEqual(Math.sqrt(6 / 100));
    expect(x.max).toBeGreaterThan(0.95 * Math.sqrt(6 / 100));
    expect(() => fanInAndFanOut([3])).toThrow(/at least 2 dimensions/);
  });
});

describe("layer defaults", () => {
  it("Linear: weight [out, in] and bias in U(-1/sqrt(in), 1/sqrt(in))", () => {
    const lin = new Linear(25, 40, { generator: new Generator(0) });
    expect(lin.weight.shape).toEqual([40, 25]);
    const w = stats(lin.weight.toArray());
    const b = stats(lin.bias!.toArray());
    expect(Math.max(-w.min, w.max)).toBeLessThanOrEqual(0.2);
    expect(Math.max(-w.min, w.max)).toBeGreaterThan(0.19);
    expect(Math.max(-b.min, b.max)).toBeLessThanOrEqual(0.2);
    expect(new Linear(3, 2, { bias: false }).bias).toBeNull();
    expect(() => new Linear(0, 2)).toThrow(/Linear: inFeatures must be a positive integer; got 0/);
  });

  it("Embedding is N(0, 1); LayerNorm starts at weight 1, bias 0", () => {
    const e = stats(new Embedding(100, 100, { generator: new Generator(9) }).weight.toArray());
    expect(Math.abs(e.mean)).toBeLessThan(0.03);
    expect(Math.abs(e.std - 1)).toBeLessThan(0.03);
    const ln = new LayerNorm(4);
    expect(ln.weight!.toArray()).toEqual([1, 1, 1, 1]);
    expect(ln.bias!.toArray()).toEqual([0, 0, 0, 0]);
    expect(new LayerNorm(4, { elementwiseAffine: false }).parameters()).toEqual([]);
  });
});
