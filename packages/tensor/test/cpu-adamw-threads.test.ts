// The CPU optimizer on worker threads (optimizer state offloaded to host memory): large storages are
// shared memory, the elements are split over the threads, and the step is bit-identical to one
// thread's, with 16-bit state, bf16 weight copies and several tensors cut across threads.
import { afterAll, describe, expect, it } from "vitest";
import * as T from "../src";
import type { View } from "../src/backend";
import { THREADED_MIN_ELEMENTS } from "../src/cpu/optimizerThreads";

const threadedStepCount = T.cpuOptimizerThreadedSteps;

const viewOf = (t: T.Tensor): View => ({ storage: t.storageRef.storage, shape: t.shape, strides: t.strides, offset: t.offset });

afterAll(() => {
  T.setCpuOptimizerThreads(1);
  T.stopCpuOptimizerThreads();
});

/** Parameters of several sizes (one large enough to be cut between threads), their state, gradients. */
function world(seed: number, dtype: T.DType, sizes = [2 * THREADED_MIN_ELEMENTS + 12_345, 70_001, 3]) {
  const gen = new T.Generator(seed);
  // The first is shared memory in every dtype (bf16 too: over 1 MiB) and cut between threads; the others stay on the calling thread.
  return sizes.map((n) => ({
    p: T.randn([n], { dtype: "float32", generator: gen }).untrack(),
    g: T.randn([n], { dtype: "float32", generator: gen }).untrack(),
    m: T.cast(T.randn([n], { dtype: "float32", generator: gen }), dtype).untrack(),
    v: T.cast(T.abs(T.randn([n], { dtype: "float32", generator: gen })), dtype).untrack(),
    lp: T.zeros([n], { dtype: "bfloat16" }).untrack(),
  }));
}

function step(threads: number, dtype: T.DType, small = false, weightDecay = 0.1): Float64Array[] {
  T.setCpuOptimizerThreads(threads, { minElements: small ? 0 : THREADED_MIN_ELEMENTS });
  // Small: every tensor in shared memory as an offloading engine allocates them, all cut between threads.
  const w = small ? T.sharedHostMemory(() => world(7, dtype, [5_003, 17, 1, 2_048])) : world(7, dtype);
  const hyper = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay, step: 3 };
  const views = (k: "p" | "g" | "m" | "v" | "lp") => w.map((e) => viewOf(e[k]));
  T.cpuBackend().adamw(views("p"), views("g"), views("m"), views("v"), hyper, views("lp"));
  const out = w.flatMap((e) => [e.p, e.m, e.v, e.lp].map((t) => t.toFloat64Array()));
  for (const e of w) for (const t of Object.values(e)) t.dispose();
  return out;
}

/** The fused call over `world`'s tensors, with the hyper-parameters `step` uses. */
function callOf(w: ReturnType<typeof world>): T.FusedAdamWCall {
  return {
    params: w.map((e) => e.p),
    grads: w.map((e) => e.g),
    expAvg: w.map((e) => e.m),
    expAvgSq: w.map((e) => e.v),
    hyper: { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, step: 3 },
    lowPrecision: w.map((e) => e.lp),
  };
}

describe("the CPU AdamW step on worker threads", () => {
  for (const dtype of ["float32", "bfloat16"] as const) {
    it(`is bit-identical to one thread's (${dtype} state)`, () => {
      const before = threadedStepCount();
      const one = step(1, dtype);
      expect(threadedStepCount()).toBe(before);
      const three = step(3, dtype);
      expect(threadedStepCount()).toBe(before + 1);
      expect(three.length).toBe(one.length);
      one.forEach((a, i) => {
        const at = a.findIndex((x, k) => !Object.is(x, three[i][k]));
        expect(at, `array ${i} element ${at}`).toBe(-1);
      });
      expect(T.cpuOptimizerThreads()).toBe(3);
    });
  }

  it("small tensors in sharedHostMemory step on the threads, bit-identical, with and without weight decay", () => {
    for (const weightDecay of [0.1, 0]) {
      const before = threadedStepCount();
      const one = step(1, "float32", true, weightDecay);
      const two = step(2, "float32", true, weightDecay);
      expect(threadedStepCount()).toBe(before + 1);
      one.forEach((a, i) => {
        const at = a.findIndex((x, k) => !Object.is(x, two[i][k]));
        expect(at, `array ${i} element ${at}`).toBe(-1);
      });
    }
  });

  it("large storages are shared memory; small ones are not, unless made inside sharedHostMemory", () => {
    const inside = T.sharedHostMemory(() => T.zeros([16]).untrack());
    expect((inside.storageRef.storage as unknown as { data: ArrayBufferView }).data.buffer).toBeInstanceOf(SharedArrayBuffer);
    inside.dispose();
    const big = T.zeros([THREADED_MIN_ELEMENTS]).untrack();
    const small = T.zeros([16]).untrack();
    const data = (t: T.Tensor) => (t.storageRef.storage as unknown as { data: ArrayBufferView }).data;
    expect(data(big).buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(data(small).buffer).toBeInstanceOf(ArrayBuffer);
    big.dispose();
    small.dispose();
  });

  // The sharding engine's step beside backward hands a unit's update to the threads and goes on.
  for (const shared of [true, false]) {
    it(`fusedAdamWBeside ${shared ? "hands the whole update to the threads, the caller free until wait()" : "runs an update whose memory is not shared at once"}: bit-identical to the step in place`, () => {
      const inPlace = step(1, "float32", true);
      T.setCpuOptimizerThreads(2, { minElements: 0 });
      const make = () => world(7, "float32", [5_003, 17, 1, 2_048]);
      const w = shared ? T.sharedHostMemory(make) : make();
      const before = threadedStepCount();
      const pending = T.fusedAdamWBeside(callOf(w));
      expect(threadedStepCount()).toBe(before + (shared ? 1 : 0));
      if (!shared) expect(pending.poll()).toBe(true);
      pending.wait();
      pending.wait();
      expect(pending.poll()).toBe(true);
      const out = w.flatMap((e) => [e.p, e.m, e.v, e.lp].map((t) => t.toFloat64Array()));
      for (const e of w) for (const t of Object.values(e)) t.dispose();
      inPlace.forEach((a, i) => {
        const at = a.findIndex((x, k) => !Object.is(x, out[i][k]));
        expect(at, `array ${i} element ${at}`).toBe(-1);
      });
    });
  }

  // The streamed step hands its CPU share out this way, small tensors of the root unit among them.
  it("fusedAdamWBeside with some tensors in shared memory and some not: those on the threads, the others at the call, bit-identical to the step in place", () => {
    const inPlace = step(1, "float32", true);
    T.setCpuOptimizerThreads(2, { minElements: 0 });
    const sharedPart = T.sharedHostMemory(() => world(7, "float32", [5_003, 17, 1, 2_048]).slice(0, 2));
    const rest = world(7, "float32", [5_003, 17, 1, 2_048]).slice(2);
    const w = [...sharedPart, ...rest];
    const before = threadedStepCount();
    const pending = T.fusedAdamWBeside(callOf(w));
    expect(threadedStepCount()).toBe(before + 1);
    // The tensors the threads do not take are done before the call returns.
    const restNow = rest.flatMap((e) => [e.p, e.m, e.v, e.lp].map((t) => t.toFloat64Array()));
    pending.wait();
    const out = w.flatMap((e) => [e.p, e.m, e.v, e.lp].map((t) => t.toFloat64Array()));
    for (const e of w) for (const t of Object.values(e)) t.dispose();
    expect(restNow).toEqual(out.slice(8));
    inPlace.forEach((a, i) => {
      const at = a.findIndex((x, k) => !Object.is(x, out[i][k]));
      expect(at, `array ${i} element ${at}`).toBe(-1);
    });
  });

  // The sharding engine adds later micro-batches' offloaded gradients into the slice this way.
  it("addBeside adds on the threads (shared memory) or at once (not shared), as add_ does", () => {
    T.setCpuOptimizerThreads(3, { minElements: 0 });
    for (const shared of [true, false]) {
      const gen = new T.Generator(11);
      const make = () => [T.randn([100_003], { generator: gen }).untrack(), T.randn([100_003], { generator: gen }).untrack()];
      const [dst, src] = shared ? T.sharedHostMemory(make) : make();
      const expected = T.noGrad(() => dst.add(src)).toFloat64Array();
      const pending = T.addBeside(dst, src);
      if (!shared) expect(pending.poll()).toBe(true);
      pending.wait();
      expect(pending.poll()).toBe(true);
      const got = dst.toFloat64Array();
      const at = got.findIndex((x, k) => !Object.is(x, expected[k]));
      expect(at, `${shared ? "shared" : "not shared"}: element ${at}`).toBe(-1);
      dst.dispose();
      src.dispose();
    }
  });

  it("refuses a thread count that is not a positive integer", () => {
    expect(() => T.setCpuOptimizerThreads(0)).toThrow("setCpuOptimizerThreads: got 0; expected a positive integer");
    expect(() => T.setCpuOptimizerThreads(2, { minElements: -1 })).toThrow("setCpuOptimizerThreads: minElements got -1; expected a non-negative integer");
  });
});
