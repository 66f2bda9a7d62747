/**
 * [Note: upload one unit ahead] (flatUnit.ts) on the CUDA backend's streams, against the fake CUDA
 * libraries of @fulgur/accelerator-cuda (its test/fixtures/fakecuda.c, built here with the C
 * compiler): memory is host memory, kernels launch into nothing, and each stream logs what was
 * queued on it. Four offloaded units computing in bf16 run a forward; from the logs: each unit's
 * slice is copied on the upload stream before compute queues the forward kernels of the unit
 * `prefetch + 1` places before it, and compute waits for that copy (at the cast) only after them.
 * (No optimizer step runs here, so no unit's bf16 host copy is current yet: [Note: uploads in the
 * compute dtype] in flatUnit.ts; the fp32 slice goes up.)
 * Values are not checked here (the fake runs no kernel): uploadAhead.test.ts checks the losses.
 */
import { Module, Sequential } from "@fulgur/nn";
import { SoloGroup } from "@fulgur/strategy-kit";
import { type Tensor, fromHost, noGrad, ones } from "@fulgur/tensor";
import { describe, expect, it } from "vitest";
import { FlatUnit, ShardingEngine, planUnits } from "../src";
import { hasCc, useFakeCuda } from "./fixtures/fakeCudaStreams";

const WIDTH = 256;

/** A unit's module: its input scaled elementwise by its weight (kernels the fake can launch: no cuBLASLt). */
class Scale extends Module {
  constructor() {
    super();
    this.registerParameter("weight", ones([WIDTH]));
  }
  forward(x: Tensor): Tensor {
    return x.mul(this.getParameter("weight"));
  }
}

describe.skipIf(!hasCc)("offloaded units upload one unit ahead, on the CUDA backend's streams (fake CUDA)", () => {
  const fake = useFakeCuda();
  const streamLog = (stream: bigint, from?: number) => fake.streamLog(stream, from);

  for (const prefetch of [1, 0]) {
    it(`prefetch ${prefetch}: unit j's slice is copied before compute queues unit j-${prefetch + 1}'s forward, and compute waits for it only after that forward`, () => {
      const ctx = fake.cuda.cudaBackend("cuda:0").ctx;
      const [compute, uploads] = [ctx.compute.handle, ctx.uploads.handle];
      const model = new Sequential(new Scale(), new Scale(), new Scale(), new Scale());
      const engine = new ShardingEngine(
        model,
        { shard: new SoloGroup(0), replicate: null },
        { shardingStrategy: "FULL_SHARD", mixedPrecision: { paramDtype: "bfloat16", reduceDtype: "float32" }, prefetch, reshardAfterForward: true, offload: true },
        "cuda:0",
      );
      const names = ["0", "1", "2", "3"];
      for (const plan of planUnits(model, names)) engine.addUnit({ path: plan.path, params: plan.params.map((p) => ({ fqn: p.fqn, tensor: model.getParameter(p.fqn) })) });
      engine.ready();

      // Which upload is whose: the upload stream's entries each unit's upload (ahead, or at its gather) queued.
      const uploadOf = new Map<string, bigint>();
      const record = (unit: FlatUnit, call: () => void): void => {
        const from = streamLog(uploads).n;
        call();
        const copy = streamLog(uploads, from).entries;
        // wait (for compute's allocation), memcpy, record (the storage's ready event)
        if (copy.length > 0 && !uploadOf.has(unit.name)) {
          expect(copy.map((e) => e.op)).toEqual(["wait", "memcpy", "record"]);
          uploadOf.set(unit.name, copy[2].a);
        }
      };
      const { startUpload, startGather } = FlatUnit.prototype;
      FlatUnit.prototype.startUpload = function (this: FlatUnit) {
        record(this, () => startUpload.call(this));
      };
      FlatUnit.prototype.startGather = function (this: FlatUnit) {
        record(this, () => startGather.call(this));
      };
      // Each unit's forward kernels: compute's entries between its pre-forward hook (after the engine's) and its post-forward hook.
      const marks = new Map<string, { uploadsAtStart: number; computeFrom: number; computeTo: number }>();
      for (const name of names) {
        const m = model.getSubmodule(name);
        m.registerForwardPreHook(() => void marks.set(name, { uploadsAtStart: streamLog(uploads).n, computeFrom: streamLog(compute).n, computeTo: -1 }));
        m.registerForwardHook(() => void (marks.get(name)!.computeTo = streamLog(compute).n));
      }
      const computeFrom = streamLog(compute).n;
      const uploadsFrom = streamLog(uploads).n;
      try {
        noGrad(() => (model.call(fromHost(new Float32Array(WIDTH).fill(1), [WIDTH], "bfloat16").to("cuda:0")) as Tensor).dispose());
      } finally {
        FlatUnit.prototype.startUpload = startUpload;
        FlatUnit.prototype.startGather = startGather;
      }
      const computeLog = streamLog(compute, computeFrom).entries;
      const copies = streamLog(uploads, uploadsFrom).entries;
      expect(copies.filter((e) => e.op === "memcpy")).toHaveLength(names.length);
      const lead = prefetch + 1;
      for (let j = lead; j < names.length; j++) {
        const before = marks.get(names[j - lead])!;
        const ready = uploadOf.get(names[j])!;
        const copyAt = uploadsFrom + copies.findIndex((e) => e.op === "record" && e.a === ready);
        const waitAt = computeFrom + computeLog.findIndex((e) => e.op === "wait" && e.a === ready);
        const kernels = computeLog.slice(before.computeFrom - computeFrom, before.computeTo - computeFrom).filter((e) => e.op === "launch");
        expect(kernels.length, `unit ${names[j - lead]} queued its forward kernels`).toBeGreaterThan(0);
        expect(copyAt, `unit ${names[j]}'s copy queued before unit ${names[j - lead]}'s kernels`).toBeLessThan(before.uploadsAtStart);
        expect(waitAt, `compute waits for unit ${names[j]}'s copy`).toBeGreaterThanOrEqual(computeFrom);
        expect(waitAt, `compute waits for unit ${names[j]}'s copy after unit ${names[j - lead]}'s kernels`).toBeGreaterThanOrEqual(before.computeTo);
        // And before the kernels of the unit it is cast for.
        expect(waitAt).toBeLessThan(marks.get(names[j])!.computeFrom);
      }
      engine.remove();
    });
  }
});
