// The input/weight split of backward (zero-bubble pipelines): over every differentiable op of the
// conformance suite, two micro-batches accumulated as input, input, weight, weight passes give
// gradients bit-identical to two ordinary backwards; the ops that split (linear, the fused MLP,
// matmul) do leave work for the weight pass, and hooks run once per accumulation.
import { describe, expect, it } from "vitest";
import * as T from "../src";
import { conformanceCases, runSplitBackwardCase } from "../src/testing";

// Ops that split, fed their weights directly (a transposed weight reaches matmul through a view node).
const SPLITTING = /^(linear|gelu mlp|matmul batched|matmul broadcast)/;

describe.each<T.DType>(["float32", "bfloat16"])("split backward in %s", (dtype) => {
  for (const c of conformanceCases().filter((c) => c.inputs.some((s) => s.grad))) {
    it(c.name, () => {
      const r = runSplitBackwardCase(c, "cpu", dtype, 11);
      expect(r.deterministic).toBe(true);
      expect(r.mismatches).toEqual([]);
      if (SPLITTING.test(c.name) && c.inputs.filter((s) => s.grad).length > 1) expect(r.deferredNodes).toBeGreaterThan(0);
    });
  }
});

describe("the weight pass", () => {
  const gen = new T.Generator(3);
  const r = (...shape: number[]) => T.randn(shape, { dtype: "float64", generator: gen });

  it("leaves the weights' gradients until run(), computes the kept input's at once, and runs hooks then", () => {
    const x = r(5, 4).requiresGrad_();
    const w = r(3, 4).requiresGrad_();
    const b = r(3).requiresGrad_();
    const posted: string[] = [];
    w.registerPostAccumulateGradHook(() => posted.push("w"));
    const handle = T.deferWeightGradients(() => T.sum(T.linear(x, w, b)).backward(), [x]);
    expect(x.grad).not.toBeNull();
    expect(w.grad).toBeNull();
    expect(b.grad).toBeNull();
    expect(posted).toEqual([]);
    expect(handle.isEmpty).toBe(false);
    handle.run();
    expect(posted).toEqual(["w"]);
    expect(w.grad!.shape).toEqual([3, 4]);
    expect(() => handle.run()).toThrow("DeferredWeightGradients.run: the weight pass already ran");
  });

  it("an op that does not split computes everything in the input pass", () => {
    const x = r(6).requiresGrad_();
    const w = r(6).requiresGrad_();
    const handle = T.deferWeightGradients(() => T.sum(T.mul(x, w)).backward(), [x]);
    expect(w.grad).not.toBeNull();
    expect(handle.isEmpty).toBe(true);
  });

  it("dispose() drops the deferred work and frees what it held", () => {
    const before = T.memoryStats("cpu").liveBytes;
    T.scope(() => {
      const x = r(64, 32).requiresGrad_();
      const w = r(16, 32).requiresGrad_();
      const handle = T.deferWeightGradients(() => T.sum(T.linear(x, w)).backward(), [x]);
      handle.dispose();
      expect(w.grad).toBeNull();
      x.grad?.dispose();
    });
    expect(T.memoryStats("cpu").liveBytes).toBe(before);
  });
});
