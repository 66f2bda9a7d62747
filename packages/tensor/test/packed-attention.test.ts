// qkvAttention (one fused node over a qkv projection) must give the values and gradients of the
// composition it replaces: view qkv as [B, T, 3, H, D], permute to q, k, v heads, attend, merge.
import { describe, expect, it } from "vitest";
import * as T from "../src";

function composed(qkv: T.Tensor, heads: number, causal: boolean): T.Tensor {
  const [b, t, c3] = qkv.shape;
  const d = c3 / 3 / heads;
  const p = T.permute(T.reshape(qkv, [b, t, 3, heads, d]), [2, 0, 3, 1, 4]);
  const a = T.scaledDotProductAttention(T.select(p, 0, 0), T.select(p, 0, 1), T.select(p, 0, 2), { causal });
  return T.reshape(T.transpose(a, 1, 2), [b, t, heads * d]);
}

function valuesAndGrad(fn: (x: T.Tensor) => T.Tensor, x0: T.Tensor, weight: T.Tensor): { y: number[]; g: number[] } {
  const x = x0.detach().requiresGrad_();
  const y = fn(x);
  T.sum(T.mul(y, weight)).backward();
  return { y: y.toArray(), g: x.grad!.toArray() };
}

describe("qkvAttention", () => {
  const gen = new T.Generator(7);
  for (const causal of [true, false]) {
    it(`matches the permute + scaledDotProductAttention composition (causal ${causal}), values and gradients`, () => {
      const qkv = T.randn([2, 5, 3 * 3 * 4], { dtype: "float64", generator: gen });
      const w = T.randn([2, 5, 12], { dtype: "float64", generator: gen });
      const ref = valuesAndGrad((x) => composed(x, 3, causal), qkv, w);
      const got = valuesAndGrad((x) => T.qkvAttention(x, 3, { causal }), qkv, w);
      expect(got.y.length).toBe(2 * 5 * 12);
      for (let i = 0; i < ref.y.length; i++) expect(got.y[i]).toBeCloseTo(ref.y[i], 12);
      for (let i = 0; i < ref.g.length; i++) expect(got.g[i]).toBeCloseTo(ref.g[i], 12);
    });
  }

  it("returns a contiguous [B, T, H * D] the output projection can read without a copy", () => {
    const y = T.qkvAttention(T.randn([1, 4, 3 * 8], { generator: gen }), 2, { causal: true });
    expect(y.shape).toEqual([1, 4, 8]);
    expect(y.isContiguous()).toBe(true);
  });

  it("accepts a qkv whose rows are not contiguous (copied first) with the same result", () => {
    const base = T.randn([5, 2, 18], { dtype: "float64", generator: gen });
    const strided = T.transpose(base, 0, 1);
    const a = T.qkvAttention(strided, 3, { causal: true }).toArray();
    const b = T.qkvAttention(T.contiguous(strided), 3, { causal: true }).toArray();
    expect(a).toEqual(b);
  });

  it("names the shape it expected when qkv does not split into heads", () => {
    expect(() => T.qkvAttention(T.zeros([1, 4, 10]), 2)).toThrow(/qkv must be \[batch, seq, 3 \* heads \* headDim\] with 2 heads; got \[1, 4, 10\]/);
    expect(() => T.qkvAttention(T.zeros([4, 12]), 2)).toThrow(/got \[4, 12\]/);
    expect(() => T.qkvAttention(T.zeros([1, 4, 12]), 0)).toThrow(/nHeads must be a positive integer, got 0/);
  });
});
