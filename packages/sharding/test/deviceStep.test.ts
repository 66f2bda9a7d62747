/**
 * The offloaded step streamed through the device ([Note: the step streamed through the device] in
 * deviceStep.ts), on a "device" of its own: the CPU backend under another name ("stream:0"), so a
 * tensor moved there is a copy (`fromHost`), the update runs on that copy, and it comes back
 * through `readIntoAsync`, which here copies only when waited for, as a GPU's download lands only
 * when its event completes. A step that read the host before waiting, or never wrote back, would
 * not match the plain CPU update to the bit.
 */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AdamW, parameter } from "@fulgur/nn";
import { type AdamWHyper, type Backend, type HostArray, type PendingRead, type Tensor, type View, cpuOptimizerThreadedSteps, cpuOptimizerThreads, fromHost, fusedAdamW, getBackend, isOutOfMemory, memoryStats, routeAdamW, setCpuMemoryLimit, setCpuOptimizerThreads, sharedHostMemory } from "@fulgur/tensor";
import { DeviceStreamedStep, streamedStepBytes } from "../src/deviceStep";
import { useCpuDevice } from "./fixtures/cpuDevice";

const log = { uploads: 0, updates: 0, reads: 0, live: 0, mostLive: 0, pinned: [] as ArrayBufferLike[], unpinned: [] as ArrayBufferLike[] };

const DEVICE = useCpuDevice("stream", (cpu) => ({
  fromHost: {
    value(this: Backend, data: HostArray, dtype: Parameters<Backend["fromHost"]>[1]) {
      log.uploads++;
      log.live++;
      log.mostLive = Math.max(log.mostLive, log.live);
      return cpu.fromHost.call(this, data, dtype);
    },
  },
  free: {
    value(this: Backend, storage: Parameters<Backend["free"]>[0]) {
      log.live--;
      cpu.free.call(this, storage);
    },
  },
  adamw: {
    value(this: Backend, ...args: Parameters<Backend["adamw"]>) {
      log.updates++;
      cpu.adamw.call(this, ...args);
    },
  },
  // The values land in `out` only at wait(), as a GPU's download does when its event completes.
  readIntoAsync: {
    value(this: Backend, view: View, out: HostArray): PendingRead {
      log.reads++;
      const values = cpu.read.call(this, view);
      let done = false;
      return {
        poll: () => done,
        wait: () => {
          if (!done) (out as Float32Array).set(values as Float32Array);
          done = true;
        },
      };
    },
  },
  pinHost: { value: (a: HostArray) => void log.pinned.push(a.buffer) },
  unpinHost: { value: (a: HostArray) => void log.unpinned.push(a.buffer) },
}));

const SIZES = { FULGUR_STREAMED_STEP_MIN_ELEMENTS: "1000", FULGUR_STREAMED_STEP_PIECE_ELEMENTS: "700" };
beforeEach(() => {
  Object.assign(process.env, SIZES);
  Object.assign(log, { uploads: 0, updates: 0, reads: 0, live: 0, mostLive: 0, pinned: [], unpinned: [] });
});
afterEach(() => {
  for (const k of Object.keys(SIZES)) delete process.env[k];
});

const HYPER: AdamWHyper = { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, step: 3 };

/** A host tensor (in shared memory, as offloaded state is) of `n` deterministic values. */
function hostTensor(n: number, seed: number, positive = false): Tensor {
  const a = Float32Array.from({ length: n }, (_, i) => {
    const x = Math.sin(seed * 7.1 + i * 0.37);
    return positive ? x * x + 0.01 : x;
  });
  return sharedHostMemory(() => fromHost(a, [n], "float32"));
}

interface Entry {
  p: Tensor;
  g: Tensor;
  m: Tensor;
  v: Tensor;
}

function entries(sizes: readonly number[]): Entry[] {
  return sizes.map((n, k) => ({ p: hostTensor(n, k + 1), g: hostTensor(n, k + 11), m: hostTensor(n, k + 21), v: hostTensor(n, k + 31, true) }));
}

function callOf(list: readonly Entry[], lowPrecision?: (Tensor | null)[]) {
  return { params: list.map((e) => e.p), grads: list.map((e) => e.g), expAvg: list.map((e) => e.m), expAvgSq: list.map((e) => e.v), hyper: HYPER, lowPrecision };
}

const valuesOf = (list: readonly Entry[]) => list.map((e) => [e.p, e.m, e.v, e.g].map((t) => Array.from(t.toHost() as Float32Array)));

describe("the offloaded step streamed through the device", () => {
  it("updates the device's share there and the rest on the CPU: the same bits as the CPU alone, with at most four pieces on the device", () => {
    const sizes = [3000, 5000, 500];
    const streamed = entries(sizes);
    const plain = entries(sizes);
    const step = new DeviceStreamedStep(DEVICE, 0.5, () => true);
    expect(routeAdamW(step.route, () => fusedAdamW(callOf(streamed)))).toBeUndefined();
    fusedAdamW(callOf(plain));
    expect(valuesOf(streamed)).toEqual(valuesOf(plain));
    // Half of the 8,000 elements of the two parameters of 1,000 and more: all of the first and
    // 1,000 of the second, in pieces of at most 700 (5 + 2); the 500-element one stays on the CPU.
    expect(step.streamedElements).toBe(4000);
    expect(log.updates).toBe(7);
    expect(log.uploads).toBe(7 * 4);
    expect(log.reads).toBe(7 * 3);
    expect(log.mostLive).toBe(4 * 4);
    expect(log.live).toBe(0);
    // The step trace's split of the host's time (queueing, the CPU's share, the wait after it).
    const timings = step.takeTimings();
    expect(Object.keys(timings)).toEqual(["queueMs", "cpuMs", "waitMs"]);
    expect(Object.values(timings).every((ms) => ms >= 0)).toBe(true);
    // The two streamed parameters' four tensors were page-locked once each, and let go at the end.
    expect(log.pinned).toHaveLength(8);
    step.unpinAll();
    expect(log.unpinned.sort()).toEqual(log.pinned.sort());
  });

  it("leaves to the CPU what it may not stream (parameters the engine keeps elsewhere, a share that rounds to nothing), and streams low-precision copies with their parameters", () => {
    const sizes = [2000, 3000];
    const streamed = entries(sizes);
    const plain = entries(sizes);
    const bf16 = (n: number) => sharedHostMemory(() => fromHost(new Float32Array(n), [n], "float32").to("bfloat16"));
    const copies = [bf16(2000), bf16(3000)];
    const plainCopies = [bf16(2000), bf16(3000)];
    const kept = streamed[0].p;
    // Of the 3,000 streamable elements (the second parameter), 2,000 go through the device: its
    // copy's first 2,000 come down from there, its last 1,000 are written on the CPU.
    const step = new DeviceStreamedStep(DEVICE, 2 / 3, (p) => p !== kept);
    routeAdamW(step.route, () => fusedAdamW(callOf(streamed, copies)));
    fusedAdamW(callOf(plain, plainCopies));
    expect(valuesOf(streamed)).toEqual(valuesOf(plain));
    expect(copies.map((c) => Array.from(c.toHost()))).toEqual(plainCopies.map((c) => Array.from(c.toHost())));
    expect(copies[1].toHost().some((x) => x !== 0)).toBe(true);
    expect(step.streamedElements).toBe(2000);
    // Pieces of 700: 700, 700, 600; each with four tensors up and four (with the copy) down.
    expect(log.updates).toBe(3);
    expect(log.reads).toBe(3 * 4);
    const none = new DeviceStreamedStep(DEVICE, 1e-5, () => true);
    expect(none.route(callOf(entries([2000])), () => {
      throw new Error("not called");
    })).toBe(false);
  });

  it("a gradient kept on the device is read there: its parameter goes to the device whole whatever the share or its size, and the gradient is not uploaded or freed", () => {
    const sizes = [900, 2000];
    const streamed = entries(sizes);
    const plain = entries(sizes);
    const kept = streamed.map((e) => e.g.to(DEVICE));
    Object.assign(log, { uploads: 0, live: 0, mostLive: 0 });
    // A share of 0, and the first parameter under the 1,000-element minimum: both go anyway.
    const step = new DeviceStreamedStep(DEVICE, 0, () => false);
    routeAdamW(step.route, () => fusedAdamW({ ...callOf(streamed), grads: kept }));
    fusedAdamW(callOf(plain));
    expect(valuesOf(streamed).map((v) => v.slice(0, 3))).toEqual(valuesOf(plain).map((v) => v.slice(0, 3)));
    expect(step.streamedElements).toBe(2900);
    // Pieces of 700: 2 and 3; three tensors up each (master, moments), not the gradient.
    expect(log.updates).toBe(5);
    expect(log.uploads).toBe(5 * 3);
    expect(kept.every((g) => !g.isDisposed)).toBe(true);
    // A gradient on the device whose parameter cannot go there is refused, naming it.
    const odd = entries([1200]);
    expect(() => routeAdamW(step.route, () => fusedAdamW({ ...callOf(odd), grads: [odd[0].g.to(DEVICE)], expAvg: [odd[0].m.to("float64")] }))).toThrow(
      /streamed optimizer step: parameter 0 of the call has its gradient on stream:0 but cannot be updated there/,
    );
  });

  it("through AdamW's fused step over three steps: the same parameters and moments as without it", () => {
    const make = () => {
      const ps = [parameter(hostTensor(2400, 1)), parameter(hostTensor(1200, 2)), parameter(hostTensor(64, 3))];
      return { ps, opt: new AdamW(ps, { lr: 1e-2, weightDecay: 0.1 }) };
    };
    const a = make();
    const b = make();
    const step = new DeviceStreamedStep(DEVICE, 0.6, () => true);
    for (let s = 0; s < 3; s++) {
      for (const [k, run] of [a, b].entries()) {
        run.ps.forEach((p, i) => (p.grad = hostTensor(p.numel, 40 + 3 * s + i)));
        if (k === 0) sharedHostMemory(() => routeAdamW(step.route, () => run.opt.step()));
        else sharedHostMemory(() => run.opt.step());
      }
    }
    expect(a.ps.map((p) => Array.from(p.toHost()))).toEqual(b.ps.map((p) => Array.from(p.toHost())));
    const moments = (r: typeof a) => r.ps.map((p) => Array.from((r.opt.state.get(p)!.exp_avg_sq as Tensor).toHost()));
    expect(moments(a)).toEqual(moments(b));
    // 60% of the 3,600 elements of 1,000 and more, each step.
    expect(step.streamedElements).toBe(3 * 2160);
  });

  it("hands the CPU's share to the worker threads before the device's first piece goes up, and returns with both done: the same bits as the CPU alone", () => {
    const threadsBefore = cpuOptimizerThreads();
    setCpuOptimizerThreads(2, { minElements: 0 });
    const cpu = getBackend("cpu");
    const besideBefore = cpu.adamwBeside!;
    const order: string[] = [];
    const uploadsBefore = () => log.uploads;
    cpu.adamwBeside = function (this: Backend, ...args: Parameters<NonNullable<Backend["adamwBeside"]>>) {
      order.push(`cpu share handed out after ${uploadsBefore()} upload(s)`);
      return besideBefore.apply(this, args);
    };
    try {
      const sizes = [3000, 5000, 2000];
      const streamed = entries(sizes);
      const plain = entries(sizes);
      const threaded = cpuOptimizerThreadedSteps();
      const step = new DeviceStreamedStep(DEVICE, 0.5, () => true);
      routeAdamW(step.route, () => fusedAdamW(callOf(streamed)));
      expect(order).toEqual(["cpu share handed out after 0 upload(s)"]);
      expect(cpuOptimizerThreadedSteps()).toBe(threaded + 1);
      expect(log.uploads).toBeGreaterThan(0);
      fusedAdamW(callOf(plain));
      expect(valuesOf(streamed)).toEqual(valuesOf(plain));
    } finally {
      cpu.adamwBeside = besideBefore;
      setCpuOptimizerThreads(threadsBefore, { minElements: 1 << 18 });
    }
  });

  it("a share outside [0, 1] is refused naming it; the device workspace is four pieces of the four tensors", () => {
    expect(() => new DeviceStreamedStep(DEVICE, 1.5, () => true)).toThrow("streamed optimizer step: share got 1.5; expected a number from 0 to 1");
    expect(streamedStepBytes(999)).toBe(0);
    expect(streamedStepBytes(5000)).toBe(4 * 700 * 16);
    expect(streamedStepBytes(5000, 2)).toBe(4 * 700 * 18);
    expect(streamedStepBytes(800)).toBe(0);
    process.env.FULGUR_STREAMED_STEP_MIN_ELEMENTS = "500";
    expect(streamedStepBytes(600)).toBe(4 * 600 * 16);
    process.env.FULGUR_STREAMED_STEP_PIECE_ELEMENTS = "0";
    expect(() => streamedStepBytes(600)).toThrow('FULGUR_STREAMED_STEP_PIECE_ELEMENTS: got "0"; expected a positive integer');
  });

  it("out of memory for a piece on the device is named as the offloaded step's, and what was on the device is freed", () => {
    const list = entries([3000]);
    const step = new DeviceStreamedStep("cpu", 1, () => true);
    const before = memoryStats("cpu").liveBytes;
    // Room for two of a piece's four tensors (700 floats each), not for all of them.
    setCpuMemoryLimit(before + 2 * 700 * 4 + 100);
    let err: unknown = null;
    try {
      routeAdamW(step.route, () => fusedAdamW(callOf(list)));
    } catch (e) {
      err = e;
    } finally {
      setCpuMemoryLimit(null);
    }
    expect(isOutOfMemory(err)).toBe(true);
    expect(err).toMatchObject({ phase: "optimizer" });
    expect((err as { where: string }).where).toMatch(/^a piece of the offloaded optimizer step on its way through the device \(offloadStepShare/);
    expect(memoryStats("cpu").liveBytes).toBe(before);
  });
});
