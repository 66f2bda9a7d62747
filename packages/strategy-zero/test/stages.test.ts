/**
 * The mapping onto the engine and the keys table, without processes: each stage's engine options,
 * the prefetch depth from the stage3 keys, the one warning naming what has no effect, DeepSpeed's
 * loss-scaling rule in the 16-mixed precision, the default wrap policy and the memory estimate.
 */
import { Block, GPT, GPT_CONFIGS } from "@fulgur/nn";
import { MixedFp16Precision, autocastCopyBytes, estimateReplicatedMemory } from "@fulgur/strategy-kit";
import { withDevice } from "@fulgur/tensor";
import { describe, expect, it } from "vitest";
import { DeepSpeedLossScaler, DeepSpeedStrategy, HONOURED_KEYS, engineOptionsFor, keysWithoutEffect, persistentUnits, prefetchDepth, unitPaths, unitsKeptToBackward } from "../src/index";
import { idleKeysWarning } from "../src/keys";
import { installLossScaler } from "../src/lossScaler";

const plan = (options: ConstructorParameters<typeof DeepSpeedStrategy>[0]) => new DeepSpeedStrategy(options).plan;

describe("stages on the engine", () => {
  it("0: NO_SHARD; 1 and 2: kept gathered; 3: FULL_SHARD freed after forward; offload is the engine's", () => {
    const pick = (o: ReturnType<typeof engineOptionsFor>) => [o.shardingStrategy, o.keepGathered, o.reshardAfterForward, o.offload];
    expect(pick(engineOptionsFor(plan({ stage: 0 }), 0))).toEqual(["NO_SHARD", false, false, false]);
    expect(pick(engineOptionsFor(plan({ stage: 1 }), 0))).toEqual(["SHARD_GRAD_OP", true, false, false]);
    expect(pick(engineOptionsFor(plan({ stage: 2, offloadOptimizer: true }), 0))).toEqual(["SHARD_GRAD_OP", true, false, true]);
    expect(pick(engineOptionsFor(plan({ stage: 3, offloadParameters: true }), 1))).toEqual(["FULL_SHARD", false, true, true]);
  });

  it("mixedPrecision: the dtypes units gather and reduce in (FSDP2's policy); absent, fp32 gathers under the precision's autocast; a bad dtype is refused naming the option", () => {
    const mp = (o: ReturnType<typeof engineOptionsFor>) => o.mixedPrecision;
    expect(mp(engineOptionsFor(plan({ stage: 3, offloadOptimizer: true }), 1))).toEqual({ paramDtype: null, reduceDtype: null });
    expect(mp(engineOptionsFor(plan({ stage: 3 }), 1, null, 0, { paramDtype: "bfloat16", reduceDtype: "float32" }))).toEqual({ paramDtype: "bfloat16", reduceDtype: "float32" });
    expect(mp(engineOptionsFor(plan({ stage: 2 }), 0, null, 0, { paramDtype: "float16" }))).toEqual({ paramDtype: "float16", reduceDtype: null });
    expect(new DeepSpeedStrategy({ stage: 3, mixedPrecision: { paramDtype: "bfloat16" } }).options.mixedPrecision).toEqual({ paramDtype: "bfloat16" });
    expect(() => new DeepSpeedStrategy({ stage: 3, mixedPrecision: { paramDtype: "int32" as never } })).toThrow(
      /deepspeed option mixedPrecision: got \{"paramDtype":"int32"\}; expected an object \{ paramDtype\?, reduceDtype\? \} with dtypes among float32, bfloat16, float16, or null/,
    );
    expect(() => new DeepSpeedStrategy({ stage: 3, mixedPrecision: { paramDtype: "bfloat16", castTo: "x" } as never })).toThrow(/^deepspeed option mixedPrecision: got \{"paramDtype":"bfloat16","castTo":"x"\}/);
  });

  it("prefetch depth: units ahead that fit the bucket, capped by max live parameters and by the units there are", () => {
    const units = [1000, 1200, 1000, 1000, 1000];
    const zero3 = (zero: object) => plan({ config: { zero_optimization: { stage: 3, ...zero } } });
    expect(prefetchDepth(zero3({}), units)).toBe(1);
    expect(prefetchDepth(zero3({ stage3_prefetch_bucket_size: 3000 }), units)).toBe(2);
    expect(prefetchDepth(zero3({ stage3_prefetch_bucket_size: 1000 }), units)).toBe(0);
    expect(prefetchDepth(zero3({ prefetch_bucket_size: 1e9 }), units)).toBe(4);
    expect(prefetchDepth(zero3({ stage3_prefetch_bucket_size: 1e9, stage3_max_live_parameters: 4000 }), units)).toBe(2);
    expect(prefetchDepth(zero3({ overlap_comm: false }), units)).toBe(0);
    expect(prefetchDepth(plan({ stage: 2 }), units)).toBe(0);
  });

  // [Note: units kept from forward to backward] in stages.ts.
  it("stage3_max_reuse_distance keeps the last units gathered from forward to backward, while the units after each are within it and the kept ones within max live parameters", () => {
    const units = ["b0", "b1", "b2", "b3"].map((path) => ({ path, numel: 1000 }));
    const zero3 = (zero: object) => plan({ config: { zero_optimization: { stage: 3, ...zero } } });
    // b3 has nothing after it, b2 has 1,000, b1 2,000 (over 1,500): b1 and b0 are freed after forward.
    expect(unitsKeptToBackward(zero3({ stage3_max_reuse_distance: 1500 }), units, 1)).toEqual(["b2", "b3"]);
    expect(unitsKeptToBackward(zero3({ max_reuse_distance: 0 }), units, 1)).toEqual(["b3"]);
    expect(unitsKeptToBackward(zero3({ stage3_max_reuse_distance: 1e9 }), units, 1)).toEqual(["b0", "b1", "b2", "b3"]);
    // Kept units and one prefetched within 3,000: two kept; with 2,000 only the last.
    expect(unitsKeptToBackward(zero3({ stage3_max_reuse_distance: 1e9, stage3_max_live_parameters: 3000 }), units, 1)).toEqual(["b2", "b3"]);
    expect(unitsKeptToBackward(zero3({ stage3_max_reuse_distance: 1e9, stage3_max_live_parameters: 2000 }), units, 1)).toEqual(["b3"]);
    expect(unitsKeptToBackward(zero3({ stage3_max_reuse_distance: 1e9, stage3_max_live_parameters: 1500 }), units, 1)).toEqual([]);
    // Without the key, or below stage 3: every unit is freed after its forward.
    expect(unitsKeptToBackward(zero3({}), units, 1)).toEqual([]);
    expect(unitsKeptToBackward(plan({ config: { zero_optimization: { stage: 2, stage3_max_reuse_distance: 1e9 } } }), units, 0)).toEqual([]);
  });

  // [Note: persistent units] in stages.ts.
  it("stage3_param_persistence_threshold keeps wrapped units of fewer parameters gathered from step to step; none without it, for \"auto\", or below stage 3", () => {
    const units = [
      { path: "small", numel: 900 },
      { path: "edge", numel: 1000 },
      { path: "big", numel: 5000 },
    ];
    const zero3 = (zero: object) => plan({ config: { zero_optimization: { stage: 3, ...zero } } });
    expect(persistentUnits(zero3({ stage3_param_persistence_threshold: 1000 }), units)).toEqual(["small"]);
    expect(persistentUnits(zero3({ param_persistence_threshold: 1e5 }), units)).toEqual(["small", "edge", "big"]);
    expect(persistentUnits(zero3({}), units)).toEqual([]);
    expect(persistentUnits(zero3({ stage3_param_persistence_threshold: "auto" }), units)).toEqual([]);
    expect(persistentUnits(plan({ config: { zero_optimization: { stage: 2, stage3_param_persistence_threshold: 1e9 } } }), units)).toEqual([]);
    // Offloaded or not, the persistent units reach the engine as units whose parameters are kept.
    expect(engineOptionsFor(zero3({}), 1, { optimizerState: [], parameters: ["small"] }).keep).toEqual({ optimizerState: [], parameters: ["small"] });
    expect(engineOptionsFor(zero3({}), 1, null).keep).toBeNull();
  });
});

describe("keys without effect: one warning", () => {
  const run = { stage: 3 as const, precision: "bf16-mixed", scalerReachable: false };

  it("the table's own keys are quiet; every other key is named, a whole block when nothing in it acts", () => {
    const config = {
      train_batch_size: 16,
      gradient_clipping: 1,
      optimizer: { type: "AdamW", params: { lr: 1e-3 } },
      zero_optimization: { stage: 3, reduce_bucket_size: 5e8, sub_group_size: 1e9, offload_param: { device: "cpu", pin_memory: true } },
    };
    expect(keysWithoutEffect(config, run).map((k) => k.path)).toEqual(["optimizer", "zero_optimization.sub_group_size", "zero_optimization.offload_param.pin_memory"]);
  });

  it("keys the run's stage or precision leave idle, and values that cannot be followed, are named with the reason", () => {
    const config = {
      fp16: { enabled: "auto", loss_scale_window: 500 },
      zero_allow_untested_optimizer: false,
      zero_optimization: { stage: 2, stage3_prefetch_bucket_size: 5e7, contiguous_gradients: false, stage3_gather_16bit_weights_on_model_save: false },
    };
    const idle = keysWithoutEffect(config, { ...run, stage: 2 });
    expect(idle).toEqual([
      { path: "fp16.loss_scale_window", why: 'loss scaling is for precision "16-mixed"; this run\'s is "bf16-mixed"' },
      { path: "zero_allow_untested_optimizer", why: "every Fulgur optimizer is allowed" },
      { path: "zero_optimization.stage3_prefetch_bucket_size", why: "stage 3 only; this run is stage 2" },
      { path: "zero_optimization.contiguous_gradients", why: "gradients are always contiguous here" },
      { path: "zero_optimization.stage3_gather_16bit_weights_on_model_save", why: "checkpoints are always full state dicts here (there is no sharded format yet)" },
    ]);
    expect(keysWithoutEffect(config, { stage: 3, precision: "16-mixed", scalerReachable: true }).map((k) => k.path)).not.toContain("fp16.loss_scale_window");
    const warning = idleKeysWarning("deepspeed", "the config \"ds.json\"", idle)!;
    expect(warning.split("\n")[0]).toBe('deepspeed: 5 keys of the config "ds.json" have no effect in Fulgur (the rest is acted on):');
    expect(idleKeysWarning("deepspeed", "x", [])).toBeNull();
  });

  it("the table says what each key does", () => {
    for (const [key, rule] of Object.entries(HONOURED_KEYS)) expect(rule.does.length, key).toBeGreaterThan(10);
  });
});

describe("fp16 loss scaling, DeepSpeed's rule", () => {
  it("starts at 2^initial_scale_power, halves after `hysteresis` overflows (not below the floor), doubles after a clean window", () => {
    const s = new DeepSpeedLossScaler({ lossScale: 0, initialScalePower: 4, lossScaleWindow: 3, hysteresis: 2, consecutiveHysteresis: false, minLossScale: 4 });
    const trace = [true, false, false, true, true, true, false, false, false, false].map((finite) => (s.update(finite), s.scaleValue));
    // The growth at step 6 resets the hysteresis, so the overflow right after it only uses it up.
    expect(trace).toEqual([16, 16, 8, 8, 8, 16, 16, 8, 4, 4]);
  });

  it("a static loss_scale never moves; state round-trips with the kit's keys", () => {
    const s = new DeepSpeedLossScaler({ lossScale: 128, initialScalePower: 16, lossScaleWindow: 1, hysteresis: 1, consecutiveHysteresis: false, minLossScale: 1 });
    s.update(false);
    s.update(true);
    expect(s.scaleValue).toBe(128);
    const t = new DeepSpeedLossScaler();
    t.loadStateDict({ scale: 1024, goodSteps: 7 });
    expect(t.stateDict()).toEqual({ scale: 1024, goodSteps: 7, hysteresis: 2 });
  });

  it("is put into a 16-mixed precision at setup and taken out at teardown; other precisions are left alone", () => {
    const precision = new MixedFp16Precision();
    const own = precision.scaler;
    const restore = installLossScaler(precision, plan({ lossScaleWindow: 10, initialScalePower: 8 }).lossScaler)!;
    expect(precision.scaler).toBeInstanceOf(DeepSpeedLossScaler);
    expect(precision.scaler.scaleValue).toBe(256);
    restore();
    expect(precision.scaler).toBe(own);
    expect(installLossScaler({ name: "bf16-mixed" } as never, plan({}).lossScaler)).toBeNull();
  });
});

describe("units and memory", () => {
  const gpt = (nLayers = 3) => withDevice("meta", () => new GPT({ vocabSize: 64, seqLen: 8, dModel: 32, nLayers, nHeads: 2 }));

  it("units: each ModuleList element by default, or what autoWrapPolicy picks (outermost only)", () => {
    const model = gpt();
    expect(unitPaths(model, null)).toEqual(["blocks.0", "blocks.1", "blocks.2"]);
    expect(unitPaths(model, [Block])).toEqual(["blocks.0", "blocks.1", "blocks.2"]);
    expect(unitPaths(model, ["Linear"]).every((p) => p.startsWith("blocks.") || p === "head")).toBe(true);
    expect(unitPaths(model, (_m, n) => n > 0)).toEqual(["emb", "pos", "blocks", "lnf", "head"]);
  });

  it("memory: stage 3 divides everything by the world; stage 2 keeps the parameters whole; offload moves the slices to the host", () => {
    const input = { module: gpt(8), precision: "32-true", microBatch: 4, worldSize: 4 };
    const s3 = new DeepSpeedStrategy({ stage: 3 }).estimateMemory(input);
    const s2 = new DeepSpeedStrategy({ stage: 2 }).estimateMemory(input);
    const s0 = new DeepSpeedStrategy({ stage: 0 }).estimateMemory(input);
    const off = new DeepSpeedStrategy({ stage: 3, offloadOptimizer: true, offloadParameters: true }).estimateMemory(input);
    expect(s3.perDevice.optimizerState * 4).toBeCloseTo(s0.perDevice.optimizerState);
    // Stages 1 and 2 keep every unit gathered: the whole model, beside this rank's slices.
    expect(s2.perDevice.gatheredUnits).toBe(s0.perDevice.parameters);
    expect(s3.perDevice.total).toBeLessThan(s2.perDevice.total);
    expect(off.perDevice.optimizerState).toBe(0);
    expect(off.perHost.optimizerState).toBe(s3.perDevice.optimizerState);
  });

  it("memory at world 1: stage 3 costs what one device costs, less the bf16 copies of the blocks it freed after forward", () => {
    const fp32 = { module: gpt(4), precision: "32-true", microBatch: 256, worldSize: 1 };
    const single = estimateReplicatedMemory("single_device", fp32, { communicationBytes: 0 });
    expect(new DeepSpeedStrategy({ stage: 3 }).estimateMemory(fp32).perDevice).toEqual(single.perDevice);
    // The 1b GPT (on meta) peaks as the head's backward starts, with every activation saved: every
    // block has finished its forward, so stage 3 holds only the head's bf16 copy; a single device
    // holds every block's too (1.5 GiB of the 17.4).
    const bf16 = { module: withDevice("meta", () => new GPT(GPT_CONFIGS["1b"])), precision: "bf16-mixed", microBatch: 4, worldSize: 1 };
    const s3 = new DeepSpeedStrategy({ stage: 3 }).estimateMemory(bf16);
    const one = estimateReplicatedMemory("single_device", bf16, { communicationBytes: 0 });
    expect(s3.peak).toEqual(one.peak);
    expect(s3.peak?.where).toBe("backward of head and loss");
    expect(s3.perDevice.workspace).toBe(autocastCopyBytes(bf16, "head"));
    expect(one.perDevice.total - s3.perDevice.total).toBe(autocastCopyBytes(bf16, "blocks"));
    expect(s3.perDevice.gradients).toBe(one.perDevice.gradients);
  });
});
