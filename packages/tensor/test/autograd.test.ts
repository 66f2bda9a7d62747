import { describe, expect, it } from "vitest";
import * as T from "../src";

describe("autograd semantics", () => {
  it("gradients accumulate across backward calls", () => {
    const x = T.tensor([1, 2, 3], { requiresGrad: true });
    x.mul(2).sum().backward();
    x.mul(x).sum().backward();
    expect(x.grad!.toArray()).toEqual([4, 6, 8]);
  });

  it("a tensor used twice gets the sum of both paths", () => {
    const x = T.tensor([3], { requiresGrad: true });
    const y = x.mul(x).add(x.mul(4));
    y.backward();
    expect(x.grad!.item()).toBe(10);
  });

  it("noGrad and detach cut the graph; non-float tensors cannot require grad", () => {
    const x = T.tensor([1, 2], { requiresGrad: true });
    const y = T.noGrad(() => x.mul(2));
    expect(y.requiresGrad).toBe(false);
    expect(x.detach().requiresGrad).toBe(false);
    expect(() => y.sum().backward()).toThrow(/does not require grad/);
    expect(() => T.arange(3).requiresGrad_(true)).toThrow(/only floating tensors/);
    expect(T.isGradEnabled()).toBe(true);
  });

  it("backward twice without retainGraph fails clearly; with it, works", () => {
    const x = T.tensor([2], { requiresGrad: true });
    const y = x.exp().mul(3);
    y.backward(undefined, { retainGraph: true });
    y.backward();
    expect(x.grad!.item()).toBeCloseTo(6 * Math.exp(2), 4);
    const z = x.exp().mul(3);
    z.backward();
    expect(() => z.backward()).toThrow(/a second time/);
  });

  it("implicit gradient only for single-element outputs", () => {
    const x = T.tensor([1, 2], { requiresGrad: true });
    expect(() => x.mul(2).backward()).toThrow(/single-element/);
  });

  it("hooks: tensor hooks can replace gradients; post-accumulate hooks see the accumulated grad", () => {
    const x = T.tensor([1, 1], { requiresGrad: true });
    const seen: number[][] = [];
    x.registerPostAccumulateGradHook((leaf) => seen.push(leaf.grad!.toArray()));
    const h = x.mul(3);
    h.registerHook((g) => g.mul(10));
    h.sum().backward();
    expect(x.grad!.toArray()).toEqual([30, 30]);
    x.mul(1).sum().backward();
    expect(seen).toEqual([[30, 30], [31, 31]]);
  });

  it("retainGrad keeps a non-leaf gradient", () => {
    const x = T.tensor([1, 2], { requiresGrad: true });
    const h = x.mul(2).retainGrad();
    h.mul(h).sum().backward();
    expect(h.grad!.toArray()).toEqual([4, 8]);
  });

  it("in-place updates of a leaf that requires grad need noGrad", () => {
    const p = T.tensor([1, 2], { requiresGrad: true });
    expect(() => p.add_(1)).toThrow(/noGrad/);
    T.noGrad(() => p.add_(T.tensor([1, 1]), -0.5));
    expect(p.toArray()).toEqual([0.5, 1.5]);
  });

  it("the gradient of a cast is cast back to the input dtype", () => {
    const x = T.tensor([1.5, -2], { requiresGrad: true });
    const y = x.cast("bfloat16").mul(T.tensor([2, 4], { dtype: "bfloat16" }));
    y.sum().backward();
    expect(x.grad!.dtype).toBe("float32");
    expect(x.grad!.toArray()).toEqual([2, 4]);
  });

  it("autocast runs matrix products in bf16 and keeps softmax/layer norm/loss in fp32", () => {
    const w = T.randn([8, 8], { requiresGrad: true, seed: 3 });
    const x = T.randn([4, 8], { seed: 4 });
    const { y, s, l } = T.autocast("bfloat16", () => {
      const y = T.matmul(x, w);
      return { y, s: T.softmax(y, -1), l: T.layerNorm(y, 8) };
    });
    expect(y.dtype).toBe("bfloat16");
    expect(s.dtype).toBe("float32");
    expect(l.dtype).toBe("float32");
    s.sum().backward();
    expect(w.grad!.dtype).toBe("float32");
    expect(() => T.autocast("int32" as never, () => 0)).toThrow(/not supported/);
  });

  it("checkpoint gives the same gradients as the plain computation, dropout included", () => {
    const run = (useCheckpoint: boolean): number[] => {
      T.manualSeed(11);
      const w = T.randn([6, 6], { requiresGrad: true, seed: 5 });
      const x = T.randn([3, 6], { requiresGrad: true, seed: 6 });
      const f = (h: T.Tensor): T.Tensor => T.dropout(T.gelu(T.matmul(h, w)), 0.3);
      const y = useCheckpoint ? T.checkpoint(f, x) : f(x);
      y.sum().backward();
      return [...w.grad!.toArray(), ...x.grad!.toArray()];
    };
    const plain = run(false);
    const ckpt = run(true);
    expect(plain.filter((v) => v === 0).length).toBeLessThan(plain.length);
    ckpt.forEach((v, i) => expect(v).toBeCloseTo(plain[i], 6));
  });
});

describe("random streams", () => {
  it("the same seed gives the same numbers; state can be saved and restored", () => {
    const a = T.randn([5], { seed: 9 }).toArray();
    expect(T.randn([5], { seed: 9 }).toArray()).toEqual(a);
    const g = new T.Generator(1);
    T.rand([3], { generator: g });
    const state = g.getState();
    const next = T.rand([4], { generator: g }).toArray();
    g.setState(state);
    expect(T.rand([4], { generator: g }).toArray()).toEqual(next);
    expect(() => g.setState({ seed: "x", offset: 0 } as never)).toThrow(/setState/);
  });

  it("uniform, normal and randint have the right ranges and moments", () => {
    const u = T.rand([20000], { seed: 1 }).toArray();
    expect(Math.min(...u)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...u)).toBeLessThan(1);
    expect(u.reduce((a, b) => a + b) / u.length).toBeCloseTo(0.5, 1);
    const z = T.randn([20000], { seed: 2 }).toArray();
    const m = z.reduce((a, b) => a + b) / z.length;
    const v = z.reduce((a, b) => a + (b - m) ** 2, 0) / z.length;
    expect(Math.abs(m)).toBeLessThan(0.03);
    expect(Math.abs(v - 1)).toBeLessThan(0.05);
    const i = T.randint(3, 7, [1000], { seed: 3 }).toArray();
    expect(new Set(i)).toEqual(new Set([3, 4, 5, 6]));
    expect(() => T.randint(5, 5, [1])).toThrow(/low < high/);
  });

  it("dropout keeps the expected fraction and scales survivors", () => {
    const y = T.dropout(T.ones([10000]), 0.25, true, new T.Generator(4)).toArray();
    const kept = y.filter((v) => v !== 0);
    expect(kept.length / y.length).toBeCloseTo(0.75, 1);
    expect(kept.every((v) => Math.abs(v - 1 / 0.75) < 1e-6)).toBe(true);
    expect(T.dropout(T.ones([4]), 0.5, false).toArray()).toEqual([1, 1, 1, 1]);
    expect(() => T.dropout(T.ones([1]), 1)).toThrow(/p must be in \[0, 1\)/);
  });
});

describe("backward after the forward's scope has closed", () => {
  it("works when inputs of the graph were freed by the scope (only saved tensors are needed)", () => {
    const w = T.tensor([1, 2], { requiresGrad: true });
    const loss = T.scope(() => w.mul(2).sum().add(w.sum()).add(T.tensor([1, 1]).sum()));
    loss.backward();
    expect(w.grad!.toArray()).toEqual([3, 3]);
  });
});
