/**
 * Offloaded units that compute in bf16 over an fp32 master upload their slice one unit ahead of
 * the gather ([Note: upload one unit ahead] in flatUnit.ts), and upload it in bf16, from a copy
 * kept in host memory, with no cast on the device ([Note: uploads in the compute dtype]), through
 * whole training steps of a GPT, forward and backward. The fake CUDA library runs no kernel and no
 * matrix product (it has no cuBLASLt), so a model cannot train on it (uploadAheadFakeCuda.test.ts
 * checks the CUDA streams' order over one forward): here the order is checked on a "device" of its
 * own, the CPU backend under another name ("trace:0"), whose uploads (`fromHost`) and casts (`copy`
 * from float32 to bfloat16) are logged beside each unit's forward and backward, and the losses
 * against units kept on the device, which cast there. On CUDA an upload is the DMA queued on the
 * upload stream, which the gather's first use on compute waits for ([Note: uploads on their own
 * stream] in @fulgur/accelerator-cuda); so "uploaded before unit i's forward" is "the copy runs
 * beside unit i's kernels".
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdamW, GPT, SGD } from "@fulgur/nn";
import { SoloGroup } from "@fulgur/strategy-kit";
import { type Backend, type HostArray, type Tensor, type View, autocastCopyStats, cpuBackend, fromHost, registerBackend, resetAutocastCopyStats, scope } from "@fulgur/tensor";
import { type FlatUnit, ShardingEngine, planUnits } from "../src";

const CONFIG = { dModel: 32, nLayers: 4, nHeads: 2, seqLen: 16, vocabSize: 64 };
const DEVICE = "trace:0";

type Event = { op: "upload" | "cast"; storage: unknown; host?: ArrayBufferLike; dtype?: string } | { op: "forward" | "forwardDone" | "backward"; unit: string };
const log: Event[] = [];

beforeAll(() => {
  // The CPU backend's kernels under another device name: a tensor moved there goes through
  // `fromHost` (an upload), and a cast through `copy` between dtypes.
  const cpu = cpuBackend();
  const trace: Backend = Object.create(cpu, {
    name: { value: "trace" },
    device: { value: DEVICE },
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
  });
  registerBackend("trace", () => trace);
});

afterAll(() => {
  registerBackend("trace", () => {
    throw new Error("the trace device is gone with its test");
  });
});

function batch(device: string): { idx: Tensor; targets: Tensor } {
  const n = 2 * CONFIG.seqLen;
  const idx = Int32Array.from({ length: n }, (_, i) => (i * 13 + 5) % CONFIG.vocabSize);
  const targets = Int32Array.from({ length: n }, (_, i) => (i * 7 + 3) % CONFIG.vocabSize);
  return { idx: fromHost(idx, [2, CONFIG.seqLen], "int32").to(device), targets: fromHost(targets, [2, CONFIG.seqLen], "int32").to(device) };
}

/** Three steps (SGD, or AdamW's fused step) of the GPT with bf16 parameters, its blocks as units; the losses, and the engine's units. */
function train(device: string, offload: boolean, prefetch: number, traced: boolean, adamw = false): { losses: number[]; units: FlatUnit[]; hosts: Map<ArrayBufferLike, string> } {
  const model = new GPT(CONFIG, { seed: 3 });
  const engine = new ShardingEngine(
    model,
    { shard: new SoloGroup(0), replicate: null },
    { shardingStrategy: "FULL_SHARD", mixedPrecision: { paramDtype: "bfloat16", reduceDtype: "float32" }, prefetch, reshardAfterForward: true, offload },
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
  for (let step = 0; step < 3; step++) {
    scope(() => {
      const loss = model.loss(idx, targets);
      losses.push(loss.item());
      engine.beginBackward();
      loss.backward();
      engine.endBackward();
    });
    engine.finishGradients();
    engine.onHost(() => optimizer.step());
    engine.afterStep();
  }
  const units = [...engine.units];
  const hosts = hostMemoryOf(units);
  engine.remove();
  return { losses, units, hosts };
}

/** Whose host memory each buffer is: a unit's host copy in bf16 ("unit") or its fp32 master slice ("unit (fp32)"). */
function hostMemoryOf(units: readonly FlatUnit[]): Map<ArrayBufferLike, string> {
  const buffer = (t: Tensor) => t.backend.readShared!(t).buffer;
  return new Map(units.flatMap((u) => [[buffer(u.master), `${u.name} (fp32)`] as const, ...(u.hostCopySlice ? [[buffer(u.hostCopySlice), u.name] as const] : [])]));
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

describe("offloaded units with a paramDtype upload their bf16 host copy one unit ahead of their gather", () => {
  for (const prefetch of [1, 0]) {
    it(`prefetch ${prefetch}: a block's copy goes up before the forward of the block ${prefetch + 1} before it, in bf16 with no cast on the device; losses unchanged`, () => {
      log.length = 0;
      const { losses, units, hosts } = train(DEVICE, true, prefetch, true);
      const events = annotate(hosts);
      const blocks = units.filter((u) => u.name !== "").map((u) => u.name);
      const at = (op: string, unit: string, from = 0): number => events.findIndex((e, i) => i >= from && e.op === op && e.unit === unit);
      // Every upload was a unit's host copy, in bf16: no fp32 slice crossed, nothing was cast on the device.
      expect(events.filter((e) => e.op === "upload" && (e.unit === "?" || e.unit.endsWith("(fp32)")))).toEqual([]);
      expect(log.filter((e) => e.op === "upload").every((e) => "dtype" in e && e.dtype === "bfloat16")).toBe(true);
      // (Casts of activations under autocast read no upload: "?".)
      expect(events.filter((e) => e.op === "cast" && e.unit !== "?")).toEqual([]);
      // The first step's forward (the order is the registration order; the engine learns it then).
      const start = 0;
      const lead = prefetch + 1;
      for (let j = lead; j < blocks.length; j++) {
        const ahead = blocks[j - lead];
        expect(at("upload", blocks[j], start), `${blocks[j]} uploaded before ${ahead}'s forward`).toBeLessThan(at("forward", ahead, start));
      }
      // Backward, in reverse: a block's copy goes up before the backward `lead` blocks after it starts.
      const back = at("forwardDone", blocks[blocks.length - 1], start);
      for (let j = blocks.length - 1 - lead; j >= 0; j--) {
        const ahead = blocks[j + lead];
        expect(at("upload", blocks[j], back), `${blocks[j]} uploaded before ${ahead}'s backward`).toBeLessThan(at("backward", ahead, back));
      }
      // One upload per gather (forward and backward, three steps): none wasted, none reused.
      for (const name of blocks) expect(events.filter((e) => e.op === "upload" && e.unit === name)).toHaveLength(6);
      // Each step's upload is of that step's master, cast on the host after SGD changed it: the
      // same losses as the units kept on the device, which cast there and upload nothing.
      expect(losses).toEqual(train(DEVICE, false, prefetch, false).losses);
      expect(losses[2]).toBeLessThan(losses[0]);
    });
  }

  it("AdamW's fused step writes the host copy beside the fp32 update: the gathers cast nothing on the host either, and the losses are those of the units kept on the device", () => {
    resetAutocastCopyStats();
    const offloaded = train(DEVICE, true, 1, false, true);
    // Each unit's segments were cast on the host once, at their first gather, before any step
    // wrote them; every later gather found them current (blocks: 5 more in forward and backward,
    // the root unit, gathered after each step: 3 more).
    const segments = (u: FlatUnit) => u.optimParams.length;
    const blocks = offloaded.units.filter((u) => u.name !== "");
    const root = offloaded.units.find((u) => u.name === "")!;
    const { casts, hits } = autocastCopyStats();
    expect(casts).toBe(blocks.reduce((n, u) => n + segments(u), 0) + segments(root));
    expect(hits).toBe(blocks.reduce((n, u) => n + 5 * segments(u), 0) + 3 * segments(root));
    expect(offloaded.losses).toEqual(train(DEVICE, false, 1, false, true).losses);
  });
});
