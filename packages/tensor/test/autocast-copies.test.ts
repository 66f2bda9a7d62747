// Autocast's kept bf16 copies of parameters: reused while the parameter is unchanged, refreshed after
// any in-place write, written by the fused AdamW in the same pass, and always equal to a fresh cast.
import { describe, expect, it } from "vitest";
import * as T from "../src";
import { cpuBackend } from "../src";

const gen = new T.Generator(5);
const bits = (t: T.Tensor): number[] => Array.from(T.cast(t, "float64").toArray());

function forward(x: T.Tensor, w: T.Tensor, b: T.Tensor): T.Tensor {
  return T.autocast("bfloat16", () => T.linear(x, w, b));
}

describe("autocast parameter copies", () => {
  it("casts a trained parameter once and reuses the copy while the parameter is unchanged", () => {
    const w = T.randn([6, 4], { generator: gen }).requiresGrad_();
    const b = T.randn([6], { generator: gen }).requiresGrad_();
    const x = T.randn([3, 4], { generator: gen });
    const y1 = forward(x, w, b);
    const copy = T.lowPrecisionCopyOf(w);
    expect(copy?.dtype).toBe("bfloat16");
    const y2 = forward(x, w, b);
    expect(T.lowPrecisionCopyOf(w)).toBe(copy);
    expect(bits(y2)).toEqual(bits(y1));
    expect(bits(copy!)).toEqual(bits(T.cast(w.detach(), "bfloat16")));
  });

  it("is refreshed after an in-place write, in the same memory", () => {
    const w = T.randn([5, 3], { generator: gen }).requiresGrad_();
    const b = T.randn([5], { generator: gen }).requiresGrad_();
    const x = T.randn([2, 3], { generator: gen });
    forward(x, w, b);
    const copy = T.lowPrecisionCopyOf(w)!;
    T.noGrad(() => w.mul_(3));
    const y = forward(x, w, b);
    expect(T.lowPrecisionCopyOf(w)).toBe(copy);
    expect(bits(copy)).toEqual(bits(T.cast(w.detach(), "bfloat16")));
    const ref = T.autocast("bfloat16", () => T.linear(x, T.cast(w.detach(), "float32"), T.cast(b.detach(), "float32")));
    expect(bits(y)).toEqual(bits(ref));
  });

  it("is not kept for tensors that are not trained leaves", () => {
    const w = T.randn([4, 4], { generator: gen });
    forward(T.randn([2, 4], { generator: gen }), w, T.randn([4], { generator: gen }));
    expect(T.lowPrecisionCopyOf(w)).toBeNull();
  });

  it("the fused AdamW writes the copy of the updated parameter, equal to a cast of it", () => {
    const p = T.randn([37], { generator: gen });
    const g = T.randn([37], { generator: gen });
    const m = T.zeros([37]);
    const v = T.zeros([37]);
    const lp = T.zeros([37], { dtype: "bfloat16" });
    cpuBackend().adamw([p], [g], [m], [v], { lr: 0.01, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, step: 1 }, [lp]);
    expect(bits(lp)).toEqual(bits(T.cast(p, "bfloat16")));
  });

  it("dropAutocastCopy frees the copy; the next autocast use makes a new one", () => {
    const w = T.randn([3, 2], { generator: gen }).requiresGrad_();
    const b = T.randn([3], { generator: gen }).requiresGrad_();
    forward(T.randn([1, 2], { generator: gen }), w, b);
    const first = T.lowPrecisionCopyOf(w)!;
    T.dropAutocastCopy(w);
    expect(first.isDisposed).toBe(true);
    expect(T.lowPrecisionCopyOf(w)).toBeNull();
    forward(T.randn([1, 2], { generator: gen }), w, b);
    expect(T.lowPrecisionCopyOf(w)).not.toBe(first);
  });

  it("keepLowPrecisionCopy: the caller's memory becomes the copy, current once the fused AdamW writes it, stale after any other write, refused when it cannot be one", () => {
    const w = T.randn([8], { generator: gen }).requiresGrad_();
    const memory = T.zeros([12], { dtype: "bfloat16" });
    const copy = memory.narrow(0, 2, 8);
    T.keepLowPrecisionCopy(w, copy);
    expect(T.lowPrecisionCopyOf(w)).toBe(copy);
    // Stale at first: nothing was written into it.
    expect(T.isLowPrecisionCopyCurrent(w)).toBe(false);
    // The fused AdamW writes it beside the update, into the caller's memory only.
    T.noGrad(() => {
      const hyper = { lr: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0, step: 1 };
      T.fusedAdamW({ params: [w], grads: [T.ones([8])], expAvg: [T.zeros([8])], expAvgSq: [T.zeros([8])], hyper, lowPrecision: [T.lowPrecisionCopyOf(w)] });
      T.markCopyWritten(w);
    });
    expect(T.isLowPrecisionCopyCurrent(w)).toBe(true);
    expect(bits(copy)).toEqual(bits(T.cast(w.detach(), "bfloat16")));
    expect(bits(memory.narrow(0, 0, 2))).toEqual([0, 0]);
    // Another write leaves it stale.
    T.noGrad(() => w.mul_(2));
    expect(T.isLowPrecisionCopyCurrent(w)).toBe(false);
    expect(T.isLowPrecisionCopyCurrent(T.zeros([3]))).toBe(false);
    expect(() => T.keepLowPrecisionCopy(w, T.zeros([7], { dtype: "bfloat16" }))).toThrow(
      "keepLowPrecisionCopy: a copy of 7 bfloat16 elements for a float32 tensor of 8; expected as many elements in another dtype",
    );
    expect(() => T.keepLowPrecisionCopy(w, T.zeros([8]))).toThrow(/expected as many elements in another dtype/);
  });
});
