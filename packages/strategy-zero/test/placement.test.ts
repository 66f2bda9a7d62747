/**
 * Which units keep state on the device with offload on, without processes: DeepSpeed's
 * offload_optimizer.ratio by whole units (how it rounds), the budget rule of offloadKeep (what a
 * budget buys, in which order), the start-up line, the refusals naming the field and the value,
 * and the "auto" budget from an accelerator's free memory.
 */
import { CONTRACT_VERSION } from "@fulgur/core";
import { GPT } from "@fulgur/nn";
import { withDevice } from "@fulgur/tensor";
import { describe, expect, it } from "vitest";
import { DeepSpeedOptionError, DeepSpeedStrategy, ZeroConfigError, engineOptionsFor, keysWithoutEffect } from "../src/index";
import { estimateZeroMemory } from "../src/memory";
import { FREE_MEMORY_HEADROOM, checkOffloadKeep, checkOffloadKeepHost, describePlacement, deviceStepShareFor, freeDeviceBytes, keepForRatio, keepInHost, keepWithinBudget, keepWithinDevice, offloadStepInBackwardProblem } from "../src/placement";

// Four blocks of 100 elements and the root unit of 200, last (the engine's order).
const units = [
  { path: "blocks.0", numel: 100 },
  { path: "blocks.1", numel: 100 },
  { path: "blocks.2", numel: 100 },
  { path: "blocks.3", numel: 100 },
  { path: "", numel: 200 },
];

describe("offload_optimizer.ratio, by whole units", () => {
  it("offloads units in order while the offloaded elements stay within ratio × all; the rest keep slices and state on the device", () => {
    expect(keepForRatio(units, 1).optimizerState).toEqual([]);
    expect(keepForRatio(units, 0).optimizerState).toEqual(["blocks.0", "blocks.1", "blocks.2", "blocks.3", ""]);
    // 0.5 × 600 = 300: three blocks; the fourth would make 400.
    expect(keepForRatio(units, 0.5).optimizerState).toEqual(["blocks.3", ""]);
    // Rounds down to whole units: 0.49 × 600 = 294 offloads two blocks, not three.
    expect(keepForRatio(units, 0.49).optimizerState).toEqual(["blocks.2", "blocks.3", ""]);
    // A later, smaller unit may still fit after a larger one did not (DeepSpeed's sub-groups alike).
    expect(keepForRatio([{ path: "a", numel: 300 }, { path: "b", numel: 500 }, { path: "c", numel: 200 }], 0.5).optimizerState).toEqual(["b"]);
    // The ratio moves optimizer state only: no unit keeps a gathered copy for it.
    expect(keepForRatio(units, 0.5).parameters).toEqual([]);
  });

  it("a ratio outside [0, 1] is refused naming the key and the range", () => {
    let error: unknown = null;
    try {
      new DeepSpeedStrategy({ config: { zero_optimization: { stage: 3, offload_optimizer: { device: "cpu", ratio: 1.5 } } } });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(ZeroConfigError);
    const [problem] = (error as ZeroConfigError).problems;
    expect(problem.path).toBe("zero_optimization.offload_optimizer.ratio");
    expect((error as Error).message).toContain("zero_optimization.offload_optimizer.ratio is 1.5, but it must be a number from 0 to 1.");
  });

  it("the plan reads it (1 when absent), the engine gets the kept units only with offload, and the key is acted on only with offload", () => {
    const plan = new DeepSpeedStrategy({ config: { zero_optimization: { stage: 3, offload_optimizer: { device: "cpu", ratio: 0.25 } } } }).plan;
    expect(plan.offloadRatio).toBe(0.25);
    expect(new DeepSpeedStrategy({ stage: 3, offloadOptimizer: true }).plan.offloadRatio).toBe(1);
    const keep = keepForRatio(units, 0.25);
    expect(engineOptionsFor(plan, 1, keep).keep).toBe(keep);
    expect(engineOptionsFor(new DeepSpeedStrategy({ stage: 3 }).plan, 1, keep).keep).toBeNull();
    const run = { stage: 3 as const, precision: "32-true", scalerReachable: false };
    expect(keysWithoutEffect({ zero_optimization: { stage: 3, offload_optimizer: { device: "cpu", ratio: 0.5 } } }, run)).toEqual([]);
    expect(keysWithoutEffect({ zero_optimization: { stage: 3, offload_optimizer: { device: "none", ratio: 0.5 } } }, run)).toEqual([
      { path: "zero_optimization.offload_optimizer.ratio", why: 'acts only with offload_optimizer.device "cpu" or "nvme"' },
    ]);
  });
});

describe("offloadKeep: what fits in the device memory left", () => {
  // World 2, fp32: a kept gathered copy is 4 bytes an element of the whole unit; slices and state
  // 16 bytes an element of this rank's half.
  const costs = { shards: 2, gatheredAnyway: false, masterBytes: 4, optimizerBytes: 8, gatheredBytes: 4 };

  it("keeps gathered parameters first, from the last unit back, then slices and state of those units", () => {
    // The root unit's copy is there anyway; each block's costs 400.
    expect(keepWithinBudget(units, 0, costs)).toEqual({ parameters: [""], optimizerState: [] });
    expect(keepWithinBudget(units, 799, costs)).toEqual({ parameters: ["", "blocks.3"], optimizerState: [] });
    expect(keepWithinBudget(units, 1600, costs)).toEqual({ parameters: ["", "blocks.3", "blocks.2", "blocks.1", "blocks.0"], optimizerState: [] });
    // Then the root unit's state (100 × 16 = 1,600), then a block's (50 × 16 = 800) while it fits.
    expect(keepWithinBudget(units, 1600 + 1600 + 799, costs).optimizerState).toEqual([""]);
    expect(keepWithinBudget(units, 1600 + 1600 + 800, costs).optimizerState).toEqual(["", "blocks.3"]);
    expect(keepWithinBudget(units, 1e9, costs).optimizerState).toEqual(["", "blocks.3", "blocks.2", "blocks.1", "blocks.0"]);
    // Nothing left (the estimate alone is more than the device has): only what is gathered anyway.
    expect(keepWithinBudget(units, -5, costs)).toEqual({ parameters: [""], optimizerState: [] });
  });

  it("alone on its rank a unit whose slice stays becomes resident: its copy counts back", () => {
    const alone = { ...costs, shards: 1 };
    // Copies 4 × 400 = 1,600; then the root unit: 200 × 16 - 800 = 2,400; a block: 100 × 16 - 400 = 1,200.
    expect(keepWithinBudget(units, 1600 + 2400 + 1200, alone).optimizerState).toEqual(["", "blocks.3"]);
    expect(keepWithinBudget(units, 1600 + 2400 + 1199, alone).optimizerState).toEqual([""]);
  });

  it("at stages 1 and 2 every unit is gathered anyway: the budget goes to slices and state", () => {
    const keep = keepWithinDevice(units, 800, { stage: 2, shards: 2, masterDtype: "float32", precision: "32-true" });
    expect(keep.parameters).toEqual(["", "blocks.3", "blocks.2", "blocks.1", "blocks.0"]);
    expect(keep.optimizerState).toEqual(["blocks.3"]);
    // Under bf16-mixed a kept copy brings its bf16 weights: 6 bytes an element.
    expect(keepWithinDevice(units, 599, { stage: 3, shards: 2, masterDtype: "float32", precision: "bf16-mixed" }).parameters).toEqual([""]);
    expect(keepWithinDevice(units, 600, { stage: 3, shards: 2, masterDtype: "float32", precision: "bf16-mixed" }).parameters).toEqual(["", "blocks.3"]);
  });

  it("one line says how many units keep what on the device", () => {
    const line = describePlacement([
      { name: "blocks.0", parameters: "nvme", optimizerState: "nvme" },
      { name: "blocks.1", parameters: "device", optimizerState: "nvme" },
      { name: "", parameters: "device", optimizerState: "device" },
    ]);
    expect(line).toBe("2 of 3 units' parameters on the device, 1 of 3 units' optimizer state on the device, the rest on nvme");
    // Three tiers: how many units keep their state in host memory rather than on disk.
    expect(
      describePlacement([
        { name: "blocks.0", parameters: "nvme", optimizerState: "nvme" },
        { name: "blocks.1", parameters: "host", optimizerState: "host" },
        { name: "", parameters: "device", optimizerState: "device" },
      ]),
    ).toBe("1 of 3 units' parameters on the device, 1 of 3 units' optimizer state on the device, 1 of 3 units' optimizer state in host memory, the rest on nvme and host");
    expect(describePlacement([{ name: "", parameters: "device", optimizerState: "device" }])).toBe(
      "1 of 1 units' parameters on the device, 1 of 1 units' optimizer state on the device, nothing offloaded",
    );
  });

  it("is refused naming the option and the value: a bad value, nothing offloaded, or a ratio below 1 beside it", () => {
    expect(() => new DeepSpeedStrategy({ stage: 3, offloadOptimizer: true, offloadKeep: -1 })).toThrow(DeepSpeedOptionError);
    expect(() => new DeepSpeedStrategy({ stage: 3, offloadOptimizer: true, offloadKeep: "most" as never })).toThrow(/offloadKeep.*"auto".*bytes/s);
    expect(() => new DeepSpeedStrategy({ stage: 3, offloadKeep: "auto" })).toThrow(
      /option offloadKeep: got "auto"; it keeps on the device what offload would move off it, but nothing is offloaded in this run \(stage 3/,
    );
    const ratio = new DeepSpeedStrategy({ config: { zero_optimization: { stage: 3, offload_optimizer: { device: "cpu", ratio: 0.5 } } } }).plan;
    expect(() => checkOffloadKeep(ratio, 1e9, "deepspeed")).toThrow(/offloadKeep: got 1000000000, and zero_optimization\.offload_optimizer\.ratio is 0\.5 in the config object/);
    expect(() => new DeepSpeedStrategy({ stage: 3, offloadOptimizer: true, offloadKeep: "auto" })).not.toThrow();
  });

  it('"auto" reads the accelerator\'s free memory, less the headroom; an accelerator that does not report it is named', () => {
    const base = { contractVersion: CONTRACT_VERSION, name: "gpu", isAvailable: () => true, deviceCount: () => 1, deviceFor: () => "gpu:0", setupDevice: async () => {}, memoryStats: () => ({ allocated: 0, reserved: 0, peak: 0 }), teardown: async () => {} };
    const reporting = { ...base, deviceMemory: (device: string) => (device === "gpu:0" ? { free: 1000, total: 4000 } : { free: 0, total: 0 }) };
    expect(freeDeviceBytes("deepspeed", reporting, "gpu:0")).toBe(Math.floor(1000 * (1 - FREE_MEMORY_HEADROOM)));
    expect(() => freeDeviceBytes("deepspeed", base, "gpu:0")).toThrow(
      'deepspeed option offloadKeep: got "auto", but the accelerator "gpu" does not report its devices\' free memory (deviceMemory); pass the bytes of device memory the run may use instead',
    );
  });
});

describe("the memory estimate with units kept on the device", () => {
  it("moves the kept units' slices and state from the host (and the disk) to the device", () => {
    const module = withDevice("meta", () => new GPT({ vocabSize: 64, seqLen: 8, dModel: 32, nLayers: 2, nHeads: 2 }));
    const input = { module, precision: "32-true", microBatch: 2, worldSize: 2 };
    const layout = { worldSize: 2, prefetch: 1, policy: null };
    // Block 1 keeps its slices and state: 12,704 elements, half on each rank, 16 bytes an element.
    const keep = { optimizerState: ["blocks.1"], parameters: [] };
    const half = (12_704 / 2) * 16;
    const cpu = new DeepSpeedStrategy({ stage: 3, offloadOptimizer: true }).plan;
    const all = estimateZeroMemory("z", cpu, input, layout);
    const some = estimateZeroMemory("z", cpu, input, { ...layout, keep });
    expect(all.perHost.total - some.perHost.total).toBe(half);
    const state = (e: typeof all): number => e.perDevice.parameters + e.perDevice.gradients + e.perDevice.optimizerState;
    expect(state(some) - state(all)).toBe(half);
    expect(some.perDevice.total - all.perDevice.total).toBe(half);
    // On NVMe, the kept unit's state (8 bytes an element of its half) is not in the files.
    const nvme = new DeepSpeedStrategy({ stage: 3, offloadOptimizer: true, offloadOptimizerDevice: "nvme", nvmePath: "/tmp" }).plan;
    expect(estimateZeroMemory("z", nvme, input, layout).disk - estimateZeroMemory("z", nvme, input, { ...layout, keep }).disk).toBe((12_704 / 2) * 8);
  });
});

describe("the offloaded step on CPU and GPU together (offloadStepShare)", () => {
  const offloaded = new DeepSpeedStrategy({ stage: 3, offloadOptimizer: true }).plan;

  it("the option's share with offload, none without it or when absent", () => {
    expect(deviceStepShareFor(offloaded, 0.3)).toBe(0.3);
    expect(deviceStepShareFor(offloaded, null)).toBe(0);
    expect(deviceStepShareFor(new DeepSpeedStrategy({ stage: 3 }).plan, 0.5)).toBe(0);
    expect(engineOptionsFor(offloaded, 1, null, 0.4).deviceStepShare).toBe(0.4);
    expect(engineOptionsFor(new DeepSpeedStrategy({ stage: 2 }).plan, 0, null, 0.4).deviceStepShare).toBe(0);
  });

  it("is refused naming the option and the value: outside [0, 1], or a share with nothing offloaded", () => {
    expect(() => new DeepSpeedStrategy({ stage: 3, offloadOptimizer: true, offloadStepShare: 1.5 })).toThrow(DeepSpeedOptionError);
    expect(() => new DeepSpeedStrategy({ stage: 3, offloadOptimizer: true, offloadStepShare: 1.5 })).toThrow(/offloadStepShare.*a number from 0 to 1/s);
    expect(() => new DeepSpeedStrategy({ stage: 2, offloadStepShare: 0.5 })).toThrow(
      'deepspeed option offloadStepShare: got 0.5; it streams offloaded optimizer state through the device, but nothing is offloaded in this run (stage 2, offload_optimizer.device "none", offload_param.device "none"); turn offload on (offloadOptimizer: true) or leave offloadStepShare out',
    );
    expect(() => new DeepSpeedStrategy({ stage: 3, offloadOptimizer: true, offloadStepShare: "auto" as never })).toThrow(/offloadStepShare.*a number from 0 to 1/s);
    expect(() => new DeepSpeedStrategy({ stage: 2, offloadStepShare: 0 })).not.toThrow();
  });

  it("the estimate counts the pieces in flight on the device in the optimizer step: four of the largest offloaded segment's four tensors", () => {
    process.env.FULGUR_STREAMED_STEP_MIN_ELEMENTS = "1";
    try {
      // The embedding (4,096 × 32) is the largest parameter: 65,536 elements on each of 2 ranks.
      const module = withDevice("meta", () => new GPT({ vocabSize: 4096, seqLen: 8, dModel: 32, nLayers: 2, nHeads: 2 }));
      const input = { module, precision: "32-true", microBatch: 2, worldSize: 2, copiesCrossBus: true };
      const layout = { worldSize: 2, prefetch: 1, policy: null };
      const none = estimateZeroMemory("z", offloaded, input, { ...layout, deviceStepShare: 0 });
      const half = estimateZeroMemory("z", offloaded, input, { ...layout, deviceStepShare: 0.5 });
      expect(none.perDevice.workspace).toBe(0);
      expect(half.peak).toEqual({ phase: "optimizer", where: "optimizer step" });
      expect(half.perDevice.workspace).toBe(4 * 65_536 * 4 * 4);
      // The units chosen for the device's share keep their gradient slices there, not on the host:
      // the smallest share takes the first unit (blocks.0, 12,704 elements, half on each rank);
      // 0.5 takes every unit here, the root unit (the embeddings) being most of the model.
      const least = estimateZeroMemory("z", offloaded, input, { ...layout, deviceStepShare: 1e-9 });
      expect(none.perHost.gradients - least.perHost.gradients).toBe((12_704 / 2) * 4);
      expect(half.perHost.gradients).toBe(0);
    } finally {
      delete process.env.FULGUR_STREAMED_STEP_MIN_ELEMENTS;
    }
  });
});

describe("GPU, host and disk together (offloadKeepHost)", () => {
  it("keeps in host memory, from the last unit back, the offloaded units whose disk share fits; the first ones go to disk", () => {
    // 12 bytes an element (optimizer state and master slice) at 2 shards: a block costs 600, the root 1,200.
    const costs = { shards: 2, bytesPerElement: 12 };
    expect(keepInHost(units, [], 0, costs)).toEqual([]);
    expect(keepInHost(units, [], 1_799, costs)).toEqual([""]);
    expect(keepInHost(units, [], 1_800, costs)).toEqual(["", "blocks.3"]);
    // Units kept on the device are not counted; a later unit that fits is still taken.
    expect(keepInHost(units, ["", "blocks.3"], 1_300, costs)).toEqual(["blocks.2", "blocks.1"]);
    expect(keepInHost([{ path: "a", numel: 100 }, { path: "b", numel: 300 }, { path: "c", numel: 100 }], [], 1_300, costs)).toEqual(["c", "a"]);
    // A negative budget (the host needs more than it has anyway) keeps nothing.
    expect(keepInHost(units, [], -5, costs)).toEqual([]);
  });

  it("is refused naming the option and the value: a bad value, or nothing going to disk", () => {
    expect(() => new DeepSpeedStrategy({ stage: 3, offloadOptimizer: true, offloadOptimizerDevice: "nvme", offloadKeepHost: 0 })).toThrow(
      /offloadKeepHost.*"auto".*bytes of host memory per rank/s,
    );
    expect(() => new DeepSpeedStrategy({ stage: 3, offloadOptimizer: true, offloadKeepHost: "auto" })).toThrow(
      'deepspeed option offloadKeepHost: got "auto"; it keeps in host memory what NVMe offload would put on disk, but nothing goes to disk in this run (offload_optimizer.device "cpu", offload_param.device "none")',
    );
    const nvme = new DeepSpeedStrategy({ stage: 3, offloadOptimizer: true, offloadOptimizerDevice: "nvme" }).plan;
    expect(() => checkOffloadKeepHost(nvme, 1e9, "deepspeed")).not.toThrow();
  });
});

// [Note: later micro-batches added beside backward] in @fulgur/sharding: with accumulation on a
// GPU's host, later micro-batches' offloaded gradients come down into shared scratch buffers.
describe("the host's scratch buffers for accumulated offloaded gradients", () => {
  it("are counted on a GPU's host with accumulation only: the units under way at once (downloads in flight and two more), the largest unit's fp32 gradient slice each", () => {
    const plan = new DeepSpeedStrategy({ stage: 3, offloadOptimizer: true }).plan;
    const module = withDevice("meta", () => new GPT({ vocabSize: 64, seqLen: 8, dModel: 32, nLayers: 2, nHeads: 2 }));
    const layout = { worldSize: 2, prefetch: 1, policy: null };
    const host = (accumulateGradBatches: number, copiesCrossBus: boolean) =>
      estimateZeroMemory("z", plan, { module, precision: "32-true", microBatch: 2, worldSize: 2, accumulateGradBatches, copiesCrossBus }, layout).perHost.gradients;
    // A block (12,704 parameters) is the largest unit; two downloads in flight (the engine's
    // DOWNLOADS_IN_FLIGHT) and two more, each half a block's fp32 gradients on each of 2 ranks.
    expect(host(2, true) - host(1, true)).toBe(((2 + 2) * 12_704 * 4) / 2);
    expect(host(2, false)).toBe(host(1, false));
  });
});

// [Note: the step beside backward] in @fulgur/sharding: refused where it cannot act, or where the
// step's factor over every gradient (clipping, fp16 loss scaling) would come after units were updated.
describe("units updated beside backward (offloadStepInBackward)", () => {
  const offloaded = new DeepSpeedStrategy({ stage: 3, offloadOptimizer: true }).plan;

  it("reaches the engine with offload only", () => {
    expect(engineOptionsFor(offloaded, 1, null, 0, null, true).stepBesideBackward).toBe(true);
    expect(engineOptionsFor(offloaded, 1, null, 0, null, false).stepBesideBackward).toBe(false);
    expect(engineOptionsFor(new DeepSpeedStrategy({ stage: 2 }).plan, 0, null, 0, null, true).stepBesideBackward).toBe(false);
  });

  it("is refused at construction naming the option: nothing offloaded, gradient_clipping or fp16 in the config, a value not a boolean", () => {
    expect(() => new DeepSpeedStrategy({ stage: 2, offloadStepInBackward: true })).toThrow(
      'deepspeed option offloadStepInBackward: got true; it updates offloaded units on the CPU beside backward, but nothing is offloaded in this run (stage 2, offload_optimizer.device "none", offload_param.device "none"). Turn offload on (offloadOptimizer: true), or leave offloadStepInBackward out',
    );
    expect(() => new DeepSpeedStrategy({ stage: 3, offloadOptimizer: true, offloadStepInBackward: true, config: { gradient_clipping: 1 } })).toThrow(
      /offloadStepInBackward: got true; gradient_clipping is 1 in the config object, and clipping needs every gradient before any unit is updated/,
    );
    expect(() => new DeepSpeedStrategy({ stage: 3, offloadOptimizer: true, offloadStepInBackward: true, config: { fp16: { enabled: true } } })).toThrow(/offloadStepInBackward: got true; fp16 .* scales the loss/);
    expect(() => new DeepSpeedStrategy({ stage: 3, offloadOptimizer: true, offloadStepInBackward: "yes" as never })).toThrow(/offloadStepInBackward.*true, false or null/s);
    expect(() => new DeepSpeedStrategy({ stage: 3, offloadOptimizer: true, offloadStepInBackward: true, config: { gradient_clipping: 0 } })).not.toThrow();
    expect(() => new DeepSpeedStrategy({ stage: 2, offloadStepInBackward: false })).not.toThrow();
  });

  it("is refused for the Trainer's fp16 precision or clipping, which the strategy learns at setup", () => {
    expect(offloadStepInBackwardProblem(offloaded, "16-mixed", undefined, "z")?.message).toBe(
      'z option offloadStepInBackward: got true; fp16 (precision "16-mixed") scales the loss, and an overflow anywhere must skip every unit\'s update. Use bf16-mixed, or leave offloadStepInBackward out',
    );
    expect(offloadStepInBackwardProblem(offloaded, "bf16-mixed", 1.5, "z")?.message).toMatch(/the Trainer clips gradients \(gradientClipVal 1\.5\)/);
    expect(offloadStepInBackwardProblem(offloaded, "bf16-mixed", undefined, "z")).toBeNull();
    expect(offloadStepInBackwardProblem(offloaded, "32-true", 0, "z")).toBeNull();
  });
});
