// The input/weight split of backward (zero-bubble pipelines): over every differentiable op of the
// conformance suite, two micro-batches accumulated as input, input, weight, weight passes give
// gradients bit-identical to two ordinary backwards; the ops that split (linear, the fused MLP,
// matmul, layer norm, embedding) do leave work for the weight pass, and hooks run once per leaf
// and micro-batch, as in an ordinary backward.
import { describe, expect, it } from "vitest";
import * as T from "../src";
import { conformanceCases, runSplitBackwardCase } from "../src/testing";

// Ops that split, fed their weights directly (a transposed weight reaches matmul through a view node).
const SPLITTING = /^(linear|gelu mlp|matmul batched|matmul broadcast|layer norm|embedding)/;

describe.each<T.DType>(["float32", "bfloat16"])("split backward in %s", (dtype) => {
  for (const c of conformanceCases().filter((c) => c.inputs.some((s) => s.grad))) {
    it(c.name, () => {
      const r = runSplitBackwardCase(c, "cpu", dtype, 11);
      expect(r.deterministic).toBe(true);
      expect(r.mismatches).toEqual([]);
      // The first input's gradient is wanted at once (runSplitBackwardCase): the others are weights.
      const weights = c.inputs.slice(1).some((s) => s.grad);
      if (SPLITTING.test(c.name) && weights) expect(r.deferredNodes).toBeGreaterThan(0);
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

  // A little model over every op that splits and one that does not (mul), two micro-batches.
  function twoMicroBatches(split: boolean, checkpointed: boolean) {
    const g2 = new T.Generator(8);
    const p = (...shape: number[]) => T.randn(shape, { dtype: "float32", generator: g2 }).requiresGrad_();
    const params = { emb: p(10, 8), lnW: p(8), lnB: p(8), w1: p(32, 8), b1: p(32), w2: p(8, 32), b2: p(8), w: p(4, 8), b: p(4), scale: p(4) };
    const calls = new Map<string, number>();
    const gradCalls = new Map<string, number>();
    for (const [name, t] of Object.entries(params)) {
      t.registerPostAccumulateGradHook(() => calls.set(name, (calls.get(name) ?? 0) + 1));
      if (name === "b") t.registerHook(() => void gradCalls.set(name, (gradCalls.get(name) ?? 0) + 1));
    }
    const ids = (k: number) => T.fromHost(Int32Array.from({ length: 6 }, (_, i) => (3 * i + k) % 10), [6], "int32");
    const body = (h: T.Tensor) => {
      const y = T.layerNorm(h, 8, params.lnW, params.lnB);
      return T.linear(T.geluMlp(y, params.w1, params.b1, params.w2, params.b2), params.w, params.b);
    };
    const handles: T.DeferredWeightGradients[] = [];
    for (const k of [0, 1]) {
      const h = T.embedding(ids(k), params.emb);
      const out = checkpointed ? T.checkpoint(body, h) : body(h);
      const loss = T.sum(T.mul(T.mul(out, params.scale), out));
      if (split) handles.push(T.deferWeightGradients(() => loss.backward()));
      else loss.backward();
    }
    const beforeRun = new Map(calls);
    const deferred = handles.reduce((n, h) => n + h.pending.length, 0);
    for (const h of handles) h.run();
    const grads = Object.fromEntries(Object.entries(params).map(([n, t]) => [n, t.grad!.toFloat64Array()]));
    return { grads, calls, gradCalls, beforeRun, deferred };
  }

  for (const checkpointed of [false, true]) {
    it(`runs every leaf's hooks once a micro-batch and gives the ordinary gradients${checkpointed ? ", through a checkpoint" : ""}`, () => {
      const ordinary = twoMicroBatches(false, checkpointed);
      const split = twoMicroBatches(true, checkpointed);
      // Embedding, layer norm, MLP and linear each leave their weights: four nodes a micro-batch.
      expect(split.deferred).toBe(8);
      // Only mul's operand (an op that does not split) got its gradient in the input passes.
      expect([...split.beforeRun]).toEqual([["scale", 2]]);
      for (const name of Object.keys(ordinary.grads)) {
        expect(ordinary.calls.get(name), name).toBe(2);
        expect(split.calls.get(name), name).toBe(2);
        const o = ordinary.grads[name];
        const s = split.grads[name];
        const at = o.findIndex((v, i) => !Object.is(v, s[i]));
        expect(at, `${name}[${at}]: ${o[at]} vs ${s[at]}`).toBe(-1);
      }
      expect(split.gradCalls.get("b")).toBe(2);
    });
  }

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
