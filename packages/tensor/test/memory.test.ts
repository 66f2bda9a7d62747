import { describe, expect, it } from "vitest";
import * as T from "../src";

const live = (): { liveBytes: number; liveTensors: number } => {
  const { liveBytes, liveTensors } = T.memoryStats("cpu");
  return { liveBytes, liveTensors };
};

describe("deterministic memory", () => {
  it("scope frees everything but what is returned or kept", () => {
    const before = live();
    let kept!: T.Tensor;
    const out = T.scope(() => {
      const a = T.ones([100]);
      const b = a.mul(2).add(1);
      kept = T.zeros([10]).keep();
      return { result: b.sum(), list: [a.mean()] };
    });
    expect(out.result.item()).toBe(300);
    expect(out.list[0].item()).toBe(1);
    const after = live();
    expect(after.liveTensors - before.liveTensors).toBe(3);
    expect(after.liveBytes - before.liveBytes).toBe(4 + 4 + 40);
    out.result.dispose();
    out.list[0].dispose();
    kept.dispose();
    expect(live()).toEqual(before);
  });

  it("a storage is freed when its last view is disposed, and dispose is idempotent", () => {
    const before = live().liveBytes;
    const x = T.zeros([256]);
    const v = x.reshape(16, 16);
    x.dispose();
    x.dispose();
    expect(live().liveBytes - before).toBe(1024);
    expect(T.scope(() => v.sum().item())).toBe(0);
    v.dispose();
    expect(live().liveBytes).toBe(before);
    expect(() => x.toArray()).toThrow(/was disposed/);
  });

  it("nested scopes hand results outward; errors still free", () => {
    const before = live();
    const r = T.scope(() => T.scope(() => T.ones([4]).mul(3)).add(1));
    expect(r.toArray()).toEqual([4, 4, 4, 4]);
    r.dispose();
    expect(() => T.scope(() => { T.ones([1000]); throw new Error("boom"); })).toThrow("boom");
    expect(live()).toEqual(before);
  });

  it("scopeAsync works across awaits and refuses a promise in scope()", async () => {
    const before = live();
    const r = await T.scopeAsync(async () => {
      const a = T.ones([8]);
      await new Promise((res) => setTimeout(res, 1));
      return a.sum();
    });
    expect(r.item()).toBe(8);
    r.dispose();
    expect(live()).toEqual(before);
    expect(() => T.scope(() => Promise.resolve(1) as never)).toThrow(/use scopeAsync/);
  });

  it("backward frees saved activations; the graph is released with its output", () => {
    const w = T.randn([64, 64], { requiresGrad: true, seed: 1 }).untrack();
    const base = live();
    const loss = T.scope(() => {
      let h = T.randn([8, 64], { seed: 2 });
      for (let i = 0; i < 4; i++) h = T.tanh(T.matmul(h, w));
      return h.sum();
    });
    const withGraph = live().liveBytes - base.liveBytes;
    expect(withGraph).toBeGreaterThan(4 * 8 * 64 * 4); // the activations are held by the graph
    loss.backward();
    loss.dispose();
    // Only w.grad (64*64 floats) is left.
    expect(live().liveBytes - base.liveBytes).toBe(64 * 64 * 4);
    expect(live().liveTensors - base.liveTensors).toBe(1);
    // A graph dropped without backward releases its saved tensors too.
    const unused = T.scope(() => T.matmul(T.ones([8, 64]), w).sum());
    unused.dispose();
    expect(live().liveBytes - base.liveBytes).toBe(64 * 64 * 4);
    w.grad!.dispose();
    w.dispose();
  });

  it("a checkpoint's backward peaks where the plain forward did: the recomputation's temporaries are freed before its backward", () => {
    const w = T.randn([64, 64], { requiresGrad: true, seed: 1 }).untrack();
    const x = T.randn([32, 64], { requiresGrad: true, seed: 2 }).untrack();
    // Each layer makes three [32, 64] tensors; the product's output and the scaled one are saved by nobody.
    const body = (h: T.Tensor): T.Tensor => {
      for (let i = 0; i < 8; i++) h = T.tanh(T.matmul(h, w).mul(2));
      return h;
    };
    const peaks = (checkpointed: boolean): { forward: number; kept: number; backward: number } => {
      let out = { forward: 0, kept: 0, backward: 0 };
      // Twice: the first pass makes the gradients; the second is measured.
      for (let pass = 0; pass < 2; pass++) {
        const base = live().liveBytes;
        T.resetPeakMemory("cpu");
        const loss = T.scope(() => (checkpointed ? T.checkpoint(body, x) : body(x)).sum());
        const forward = T.memoryStats("cpu").peakBytes - base;
        const kept = live().liveBytes - base;
        T.resetPeakMemory("cpu");
        T.scope(() => loss.backward());
        loss.dispose();
        out = { forward, kept, backward: T.memoryStats("cpu").peakBytes - base };
      }
      return out;
    };
    const plain = peaks(false);
    const checkpointed = peaks(true);
    const tensor = 32 * 64 * 4;
    // The checkpointed forward keeps nothing of its layers; its backward recomputes them, so it peaks
    // as the plain forward did (every layer's three tensors), not higher: once the recomputation's
    // unsaved temporaries lived on through its backward, four tensors more here.
    expect(checkpointed.kept).toBeLessThan(tensor);
    expect(plain.kept).toBeGreaterThanOrEqual(8 * tensor);
    expect(plain.forward).toBeGreaterThanOrEqual(8 * 3 * tensor);
    expect(checkpointed.backward).toBeLessThanOrEqual(Math.max(plain.forward, plain.backward) + 64);
    x.grad!.dispose();
    w.grad!.dispose();
    x.dispose();
    w.dispose();
  });

  it("peak bytes are tracked and can be reset", () => {
    T.resetPeakMemory("cpu");
    const start = live().liveBytes;
    T.scope(() => void T.zeros([1 << 16]));
    expect(T.memoryStats("cpu").peakBytes).toBeGreaterThanOrEqual(start + (1 << 18));
    T.resetPeakMemory("cpu");
    expect(T.memoryStats("cpu").peakBytes).toBe(live().liveBytes);
  });
});
