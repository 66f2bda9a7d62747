/**
 * Offloaded units that compute in bf16 over an fp32 master upload their slice one unit ahead of
 * the gather ([Note: upload one unit ahead] in flatUnit.ts), through whole training steps of a
 * GPT, forward and backward: the fp32 slice, cast on the device, until an optimizer step has
 * written the unit's bf16 copy in host memory, and that copy from then on, with no cast
 * ([Note: uploads in the compute dtype]). The fake CUDA library runs no kernel and no matrix
 * product (it has no cuBLASLt), so a model cannot train on it (uploadAheadFakeCuda.test.ts checks
 * the CUDA streams' order over one forward): here the order is checked on a "device" of its own,
 * the CPU backend under another name ("trace:0"), whose uploads (`fromHost`) and casts (`copy` from
 * float32 to bfloat16) are logged beside each unit's forward and backward, and the losses against
 * units kept on the device. On CUDA an upload is the DMA queued on the upload stream and the cast
 * (or the copy into the gathered buffer) the first use on compute, which waits for it ([Note:
 * uploads on their own stream] in @fulgur/accelerator-cuda); so "uploaded before unit i's forward,
 * cast after it" is "the copy runs beside unit i's kernels".
 */
import { describe, expect, it } from "vitest";
import type { ProcessGroup } from "@fulgur/core";
import { AdamW, GPT, Module, SGD, gradNormPart, scaleToNorm } from "@fulgur/nn";
import { COMPLETED_WORK, SoloGroup } from "@fulgur/strategy-kit";
import { type Backend, type HostArray, type Tensor, type View, fromHost, noGrad, ones, scope } from "@fulgur/tensor";
import { type FlatUnit, ShardingEngine, planUnits } from "../src";
import { useCpuDevice } from "./fixtures/cpuDevice";

const CONFIG = { dModel: 32, nLayers: 4, nHeads: 2, seqLen: 16, vocabSize: 64 };
type Event = { op: "upload" | "cast"; storage: unknown; host?: ArrayBufferLike; dtype?: string } | { op: "forward" | "forwardDone" | "backward" | "step"; unit: string };
const log: Event[] = [];

// The CPU backend's kernels under another device name: a tensor moved there goes through
// `fromHost` (an upload), and a cast through `copy` between dtypes.
const DEVICE = useCpuDevice("trace", (cpu) => ({
  fromHost: {
    value(this: Backend, data: HostArray, dtype: Parameters<Backend["fromHost"]>[1]) {
      const s = cpu.fromHost.call(this, data, dtype);
      // Slices are float32 or bfloat16; the batch's token ids are int32.
      if (dtype !== "int32") log.push({ op: "upload", storage: s, host: (data as Float32Array).buffer, dtype });
      return s;
    },
  },
  copy: {
    value(this: Backend, src: View, dst: View) {
      if (src.storage.dtype === "float32" && dst.storage.dtype === "bfloat16") log.push({ op: "cast", storage: src.storage });
      cpu.copy.call(this, src, dst);
    },
  },
}));

function batch(device: string): { idx: Tensor; targets: Tensor } {
  const n = 2 * CONFIG.seqLen;
  const idx = Int32Array.from({ length: n }, (_, i) => (i * 13 + 5) % CONFIG.vocabSize);
  const targets = Int32Array.from({ length: n }, (_, i) => (i * 7 + 3) % CONFIG.vocabSize);
  return { idx: fromHost(idx, [2, CONFIG.seqLen], "int32").to(device), targets: fromHost(targets, [2, CONFIG.seqLen], "int32").to(device) };
}

/** Three steps (SGD, or AdamW's fused step) of the GPT with bf16 parameters, its blocks as units; the losses, and the engine's units. */
async function train(
  device: string,
  offload: boolean,
  prefetch: number,
  traced: boolean,
  adamw = false,
  deviceStepShare = 0,
  clip: number | null = null,
): Promise<{ losses: number[]; units: FlatUnit[]; hosts: Map<ArrayBufferLike, string>; gradientDevices: string[] }> {
  const model = new GPT(CONFIG, { seed: 3 });
  const engine = new ShardingEngine(
    model,
    { shard: new SoloGroup(0), replicate: null },
    { shardingStrategy: "FULL_SHARD", mixedPrecision: { paramDtype: "bfloat16", reduceDtype: "float32" }, prefetch, reshardAfterForward: true, offload, deviceStepShare },
    device,
  );
  const blocks = model.blocks.children().map((_, i) => `blocks.${i}`);
  for (const plan of planUnits(model, blocks)) engine.addUnit({ path: plan.path, params: plan.params.map((p) => ({ fqn: p.fqn, tensor: model.getParameter(p.fqn) })) });
  engine.ready();
  // Registered after the engine's hooks: a unit's forward (its kernels) starts after the engine's
  // pre-forward hook has gathered it and prefetched the next, and ends before its post-forward hook.
  if (traced) {
    for (const name of blocks) {
      const m = model.getSubmodule(name);
      m.registerForwardPreHook(() => void log.push({ op: "forward", unit: name }));
      m.registerForwardHook(() => void log.push({ op: "forwardDone", unit: name }));
      m.registerBackwardPreHook(() => void log.push({ op: "backward", unit: name }));
    }
  }
  const optimizer = engine.onHost(() => (adamw ? new AdamW(engine.optimizerParams(), { lr: 0.01 }) : new SGD(engine.optimizerParams(), { lr: 0.5 })));
  const { idx, targets } = batch(device);
  const losses: number[] = [];
  let gradientDevices: string[] = [];
  for (let step = 0; step < 3; step++) {
    scope(() => {
      const loss = model.loss(idx, targets);
      losses.push(loss.item());
      engine.beginBackward();
      loss.backward();
      engine.endBackward();
    });
    const grads = engine.finishGradients();
    // Clipping by the global norm, over gradients on the device and on the host alike.
    if (clip !== null) scaleToNorm(grads, gradNormPart(grads) ** 0.5, clip);
    // Where each unit's optimizer gradients are when the step reads them.
    gradientDevices = engine.units.map((u) => u.optimParams[0].grad?.device ?? "none");
    await engine.step(optimizer, async () => optimizer.step());
    if (traced) log.push({ op: "step", unit: "" });
    engine.afterStep();
  }
  const units = [...engine.units];
  const hosts = hostMemoryOf(units);
  engine.remove();
  return { losses, units, hosts, gradientDevices };
}

/** Whose host memory each buffer is: a unit's fp32 master slice ("unit") or its host copy in bf16 ("unit (bf16)"). */
function hostMemoryOf(units: readonly FlatUnit[]): Map<ArrayBufferLike, string> {
  const buffer = (t: Tensor) => t.backend.readShared!(t).buffer;
  return new Map(units.flatMap((u) => [[buffer(u.master), u.name] as const, ...(u.hostCopySlice ? [[buffer(u.hostCopySlice), `${u.name} (bf16)`] as const] : [])]));
}

/** Which unit each upload and cast in the log is for: an upload by the host memory it reads (hostMemoryOf), a cast by the upload it reads. */
function annotate(byHost: Map<ArrayBufferLike, string>): { op: string; unit: string }[] {
  const byStorage = new Map<unknown, string>();
  return log.map((e) => {
    if ("unit" in e) return { op: e.op, unit: e.unit };
    const unit = e.op === "upload" ? (byHost.get(e.host!) ?? "?") : (byStorage.get(e.storage) ?? "?");
    if (e.op === "upload") byStorage.set(e.storage, unit);
    return { op: e.op, unit };
  });
}

describe("offloaded units with a paramDtype upload one unit ahead of their gather", () => {
  for (const prefetch of [1, 0]) {
    it(`prefetch ${prefetch}: a block's slice goes up before the forward of the block ${prefetch + 1} before it, and is cast only after that forward; losses unchanged`, async () => {
      log.length = 0;
      const { losses, units, hosts } = await train(DEVICE, true, prefetch, true);
      const events = annotate(hosts);
      const blocks = units.filter((u) => u.name !== "").map((u) => u.name);
      const at = (op: string, unit: string, from = 0): number => events.findIndex((e, i) => i >= from && e.op === op && e.unit === unit);
      // Every upload was a unit's fp32 slice: SGD writes no bf16 copy, so none is ever current.
      expect(events.filter((e) => e.op === "upload" && (e.unit === "?" || e.unit.endsWith("(bf16)")))).toEqual([]);
      // The first step's forward (the order is the registration order; the engine learns it then).
      const start = 0;
      const lead = prefetch + 1;
      for (let j = lead; j < blocks.length; j++) {
        const upload = at("upload", blocks[j], start);
        const cast = at("cast", blocks[j], start);
        const ahead = blocks[j - lead];
        expect(upload, `${blocks[j]} uploaded before ${ahead}'s forward`).toBeLessThan(at("forward", ahead, start));
        expect(cast, `${blocks[j]} cast after ${ahead}'s forward`).toBeGreaterThan(at("forwardDone", ahead, start));
        expect(cast).toBeLessThan(at("forward", blocks[j], start));
      }
      // Backward, in reverse: a block's slice goes up before the backward `lead` blocks after it starts.
      const back = at("forwardDone", blocks[blocks.length - 1], start);
      for (let j = blocks.length - 1 - lead; j >= 0; j--) {
        const upload = at("upload", blocks[j], back);
        const ahead = blocks[j + lead];
        expect(upload, `${blocks[j]} uploaded before ${ahead}'s backward`).toBeLessThan(at("backward", ahead, back));
        expect(at("cast", blocks[j], back)).toBeGreaterThan(at("backward", ahead, back));
        expect(at("cast", blocks[j], back)).toBeLessThan(at("backward", blocks[j], back));
      }
      // One upload and one cast per gather (forward and backward, three steps): none wasted, none reused.
      for (const name of blocks) {
        expect(events.filter((e) => e.op === "upload" && e.unit === name)).toHaveLength(6);
        expect(events.filter((e) => e.op === "cast" && e.unit === name)).toHaveLength(6);
      }
      // Each step's upload is of that step's master (the slices changed in between): the same
      // losses as the units kept on the device, which upload nothing.
      expect(losses).toEqual((await train(DEVICE, false, prefetch, false)).losses);
      expect(losses[2]).toBeLessThan(losses[0]);
    });
  }


  it("after AdamW's first fused step (which writes each unit's bf16 host copy beside the update) the copies go up instead, one unit ahead, with no cast; losses unchanged", async () => {
    log.length = 0;
    const { losses, units, hosts } = await train(DEVICE, true, 1, true, true);
    const events = annotate(hosts);
    const blocks = units.filter((u) => u.name !== "").map((u) => u.name);
    const firstStep = events.findIndex((e) => e.op === "step");
    for (const name of blocks) {
      const uploads = (from: number, to: number, unit: string) => events.slice(from, to).filter((e) => e.op === "upload" && e.unit === unit).length;
      // Step 1 (forward and backward): the fp32 slice, cast on the device; steps 2 and 3: the bf16 copy.
      expect([uploads(0, firstStep, name), uploads(0, firstStep, `${name} (bf16)`)]).toEqual([2, 0]);
      expect([uploads(firstStep, events.length, name), uploads(firstStep, events.length, `${name} (bf16)`)]).toEqual([0, 4]);
      expect(events.filter((e) => e.op === "cast" && e.unit === name)).toHaveLength(2);
      expect(events.filter((e) => e.op === "cast" && e.unit === `${name} (bf16)`)).toEqual([]);
    }
    // Step 2's forward: a block's copy goes up before the forward of the block two before it.
    const at = (op: string, unit: string) => events.findIndex((e, i) => i > firstStep && e.op === op && e.unit === unit);
    for (let j = 2; j < blocks.length; j++) expect(at("upload", `${blocks[j]} (bf16)`), blocks[j]).toBeLessThan(at("forward", blocks[j - 2]));
    expect(losses).toEqual((await train(DEVICE, false, 1, false, true)).losses);
    expect(losses[2]).toBeLessThan(losses[0]);
  });

  // [Note: gradients beside the streamed step] in deviceStep.ts: the units whose step goes through
  // the device keep their gradient slices there; the step reads them in place.
  it("with half of each step through the device, those units' gradients stay on it for the step (AdamW, also clipped by the global norm), or come to the host for an optimizer the step does not route (SGD); losses unchanged", async () => {
    const streamed = await train(DEVICE, true, 1, false, true, 0.5);
    // Four blocks and the root unit: the first blocks, up to half of the elements, step on the device.
    const onDevice = streamed.gradientDevices.filter((d) => d === DEVICE).length;
    expect(onDevice).toBeGreaterThan(0);
    expect(onDevice).toBeLessThan(streamed.units.length);
    expect(streamed.gradientDevices.slice(0, onDevice)).toEqual(Array(onDevice).fill(DEVICE));
    expect(streamed.gradientDevices.slice(onDevice)).toEqual(Array(streamed.units.length - onDevice).fill("cpu"));
    expect(streamed.losses).toEqual((await train(DEVICE, false, 1, false, true)).losses);
    // Clipped by the global norm (here every step clips): the norm covers the device's gradients too.
    const clipped = await train(DEVICE, true, 1, false, true, 0.5, 0.05);
    expect(clipped.gradientDevices.filter((d) => d === DEVICE)).toHaveLength(onDevice);
    expect(clipped.losses).toEqual((await train(DEVICE, false, 1, false, true, 0, 0.05)).losses);
    expect(clipped.losses).not.toEqual(streamed.losses);
    const sgd = await train(DEVICE, true, 1, false, false, 0.5);
    expect(sgd.gradientDevices).toEqual(Array(sgd.units.length).fill("cpu"));
    expect(sgd.losses).toEqual((await train(DEVICE, false, 1, false, false)).losses);
  });

  it("at world 2, a rank holding none of a parameter (an empty segment, never stepped) still uploads its bf16 copy once the optimizer wrote the rest", () => {
    // Rank 0 of 2 over w (8×4) and b (2): its 17 elements are all of w's first half; b's segment is empty here.
    class Lin extends Module {
      constructor() {
        super();
        this.registerParameter("w", ones([8, 4]));
        this.registerParameter("b", ones([2]));
      }
      forward(x: Tensor): Tensor {
        return x;
      }
    }
    class Root extends Module {
      readonly lin = this.registerModule("lin", new Lin());
      forward(x: Tensor): Tensor {
        return this.lin.call(x) as Tensor;
      }
    }
    const root = new Root();
    const engine = new ShardingEngine(
      root,
      { shard: new HalfGroup(), replicate: null },
      { shardingStrategy: "FULL_SHARD", mixedPrecision: { paramDtype: "bfloat16", reduceDtype: "float32" }, prefetch: 0, reshardAfterForward: true, offload: true },
      DEVICE,
    );
    for (const plan of planUnits(root, ["lin"])) engine.addUnit({ path: plan.path, params: plan.params.map((p) => ({ fqn: p.fqn, tensor: root.getParameter(p.fqn) })) });
    engine.ready();
    const unit = engine.units[0];
    expect(unit.optimParams.map((p) => p.numel)).toEqual([17, 0]);
    const optimizer = engine.onHost(() => new AdamW(engine.optimizerParams(), { lr: 0.01 }));
    for (const p of unit.optimParams) if (p.numel > 0) p.grad = engine.onHost(() => ones([p.numel]));
    engine.onHost(() => optimizer.step());
    engine.afterStep();
    log.length = 0;
    unit.startGather();
    unit.gather();
    const uploads = log.filter((e) => e.op === "upload");
    expect(uploads.map((e) => ("dtype" in e ? e.dtype : null))).toEqual(["bfloat16"]);
    expect(uploads[0].op === "upload" && uploads[0].host).toBe(unit.hostCopySlice!.backend.readShared!(unit.hostCopySlice!).buffer);
    engine.remove();
  });
});

/** Rank 0 of a group of two whose other rank holds the same slice: an all-gather writes it twice. */
class HalfGroup implements ProcessGroup {
  readonly backend = "half";
  readonly rank = 0;
  readonly size = 2;
  readonly ranks = [0, 1];
  allGather(output: Tensor, input: Tensor) {
    noGrad(() => {
      const n = input.numel;
      output.narrow(0, 0, n).copy_(input);
      output.narrow(0, n, n).copy_(input);
    });
    return COMPLETED_WORK;
  }
  reduceScatter(output: Tensor, input: Tensor) {
    noGrad(() => output.copy_(input.narrow(0, 0, output.numel)));
    return COMPLETED_WORK;
  }
  allReduce() {
    return COMPLETED_WORK;
  }
  broadcast() {
    return COMPLETED_WORK;
  }
  send(): never {
    throw new Error("not in this test");
  }
  recv(): never {
    throw new Error("not in this test");
  }
  barrier() {
    return COMPLETED_WORK;
  }
  newGroup(): never {
    throw new Error("not in this test");
  }
  async destroy() {}
}
