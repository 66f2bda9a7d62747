// Gradient clipping with PyTorch's clip_grad_norm_ / clip_grad_value_ semantics.
import { describe, expect, it } from "vitest";
import { tensor } from "@fulgur/tensor";
import type { Tensor } from "@fulgur/tensor";
import { clipGradNorm, clipGradValue, parameter } from "../src/index";

function withGrads(...gs: number[][]): Tensor[] {
  return gs.map((g) => {
    const p = parameter(tensor(g.map(() => 0)));
    p.grad = tensor(g);
    return p;
  });
}

describe("clipGradNorm", () => {
  it("returns the total 2-norm and scales by maxNorm / (total + 1e-6)", () => {
    const ps = withGrads([3, 4], [12]);
    const total = clipGradNorm(ps, 6.5);
    expect(total).toBeCloseTo(13, 5);
    const coef = 6.5 / (13 + 1e-6);
    expect(ps[0].grad!.toArray()[0]).toBeCloseTo(3 * coef, 6);
    expect(ps[0].grad!.toArray()[1]).toBeCloseTo(4 * coef, 6);
    expect(ps[1].grad!.toArray()[0]).toBeCloseTo(12 * coef, 6);
  });

  it("leaves gradients alone when the norm is below maxNorm", () => {
    const ps = withGrads([3, 4]);
    expect(clipGradNorm(ps, 10)).toBeCloseTo(5, 6);
    expect(ps[0].grad!.toArray()).toEqual([3, 4]);
  });

  it("supports the max norm and the 1-norm and skips parameters without gradients", () => {
    const ps = [...withGrads([1, -7], [2]), parameter(tensor([5]))];
    expect(clipGradNorm(ps, 100, Infinity)).toBe(7);
    expect(clipGradNorm(ps, 100, 1)).toBe(10);
    expect(clipGradNorm(ps, 5, 1)).toBe(10);
    expect(ps[0].grad!.toArray()[1]).toBeCloseTo(-7 * (5 / (10 + 1e-6)), 6);
    expect(clipGradNorm([parameter(tensor([1]))], 1)).toBe(0);
  });

  it("reports a non-finite norm, and throws on it when asked", () => {
    expect(clipGradNorm(withGrads([Infinity, 1]), 1)).toBe(Infinity);
    expect(() => clipGradNorm(withGrads([Number.NaN]), 1, 2, { errorIfNonfinite: true })).toThrow(/total norm of order 2 .* is NaN/);
    expect(() => clipGradNorm(withGrads([1]), -1)).toThrow(/maxNorm must be a number >= 0; got -1/);
  });
});

describe("clipGradValue", () => {
  it("clamps every element into [-v, v]", () => {
    const ps = withGrads([-3, 0.5, 2], [10]);
    clipGradValue(ps, 1);
    expect(ps[0].grad!.toArray()).toEqual([-1, 0.5, 1]);
    expect(ps[1].grad!.toArray()).toEqual([1]);
  });
});
