/**
 * Names, options and configs, without processes: every Lightning name resolves to the config
 * Lightning documents for it, bad options name the field, a config's problems come all at once at
 * construction, the environment variable is read, and the values the Trainer fills in ("auto",
 * clipping, the precision blocks, the batch-size rule) are taken or refused as the README says.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { KNOWN_STRATEGY_PACKAGES, StrategyRegistry } from "@fulgur/core";
import { afterAll, describe, expect, it } from "vitest";
import {
  CONFIG_ENV,
  DeepSpeedOptionError,
  DeepSpeedStrategy,
  NvmePathError,
  checkNvmePath,
  nvmeOffloadOf,
  ZERO_STRATEGIES,
  ZeroConfigError,
  parseDeepSpeedOptions,
  resolvePlan,
} from "../src/index";
import { batchSizeProblems, clippingFor, precisionProblems, resolveTrainerBatch } from "../src/trainerValues";

const CONFIGS = fileURLToPath(new URL("./fixtures/configs/", import.meta.url));
const scratch = mkdtempSync(join(tmpdir(), "fulgur-zero-config-"));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

function configError(make: () => unknown): ZeroConfigError {
  try {
    make();
  } catch (err) {
    expect(err).toBeInstanceOf(ZeroConfigError);
    return err as ZeroConfigError;
  }
  throw new Error("expected a ZeroConfigError");
}

describe("names (Lightning's, from one table)", () => {
  // What Lightning registers each name with (DeepSpeedStrategy.register_strategies), as config keys.
  const documented: Record<string, { stage: number; optimizer: string; param: string }> = {
    deepspeed: { stage: 2, optimizer: "none", param: "none" },
    deepspeed_stage_1: { stage: 1, optimizer: "none", param: "none" },
    deepspeed_stage_1_offload: { stage: 1, optimizer: "cpu", param: "none" },
    deepspeed_stage_2: { stage: 2, optimizer: "none", param: "none" },
    deepspeed_stage_2_offload: { stage: 2, optimizer: "cpu", param: "none" },
    deepspeed_stage_3: { stage: 3, optimizer: "none", param: "none" },
    deepspeed_stage_3_offload: { stage: 3, optimizer: "cpu", param: "cpu" },
    deepspeed_stage_3_offload_nvme: { stage: 3, optimizer: "nvme", param: "nvme" },
    zero1: { stage: 1, optimizer: "none", param: "none" },
    zero2: { stage: 2, optimizer: "none", param: "none" },
    zero3: { stage: 3, optimizer: "none", param: "none" },
  };

  it("registers exactly the documented names, each resolving to its stage and offload", () => {
    expect(ZERO_STRATEGIES.map((e) => e.name).sort()).toEqual(Object.keys(documented).sort());
    for (const [name, want] of Object.entries(documented)) {
      const s = StrategyRegistry.create(name) as DeepSpeedStrategy;
      expect(s.name).toBe(name);
      expect({ stage: s.plan.stage, optimizer: s.plan.offloadOptimizer, param: s.plan.offloadParam }, name).toEqual(want);
    }
    const offload = StrategyRegistry.create("deepspeed_stage_2_offload") as DeepSpeedStrategy;
    expect(offload.config).toEqual({ zero_optimization: { stage: 2, offload_optimizer: { device: "cpu" } } });
  });

  it("every name is in @fulgur/core's table of known names", () => {
    const missing = ZERO_STRATEGIES.map((e) => e.name).filter((n) => KNOWN_STRATEGY_PACKAGES[n] !== "@fulgur/strategy-zero");
    expect(missing).toEqual([]);
  });

  it("deepspeed_stage_3_offload_nvme checks its directory when a job starts, naming the key and the value", async () => {
    const s = StrategyRegistry.create("deepspeed_stage_3_offload_nvme") as DeepSpeedStrategy;
    const context = {} as Parameters<DeepSpeedStrategy["setup"]>[0];
    // The default /local_nvme is not on this machine.
    await expect(s.setup(context)).rejects.toThrow(NvmePathError);
    await expect(s.launch({ devices: 2, numNodes: 1, script: "x.mjs", argv: [] })).rejects.toThrow(
      'deepspeed_stage_3_offload_nvme: zero_optimization.offload_optimizer.nvme_path / zero_optimization.offload_param.nvme_path (option nvmePath): got "/local_nvme"',
    );
  });

  it("an NVMe directory that is missing, a file or not writable is refused, naming the value and what is allowed", () => {
    const dir = mkdtempSync(join(tmpdir(), "fulgur-nvme-check-"));
    try {
      const file = join(dir, "a-file");
      writeFileSync(file, "x");
      const locked = join(dir, "locked");
      mkdirSync(locked, { mode: 0o500 });
      const plan = (nvmePath: string) => new DeepSpeedStrategy({ stage: 3, offloadOptimizer: true, offloadOptimizerDevice: "nvme", nvmePath }).plan;
      expect(() => checkNvmePath(plan(join(dir, "missing")), "zero3")).toThrow(/got ".*missing" in .*, which does not exist; expected an existing, writable directory/);
      expect(() => checkNvmePath(plan(file), "zero3")).toThrow(/zero3: zero_optimization\.offload_optimizer\.nvme_path \(option nvmePath\): got ".*a-file" .*which is not a directory/);
      // root may write anywhere: only then is the locked directory writable.
      if (process.getuid?.() !== 0) expect(() => checkNvmePath(plan(locked), "zero3")).toThrow(/which this process cannot write to/);
      expect(() => checkNvmePath(plan(dir), "zero3")).not.toThrow();
      const nvme = nvmeOffloadOf(plan(dir));
      expect(nvme).toMatchObject({ path: dir, optimizerState: true, parameters: false, bufferCount: 4, bufferSize: 1e8, blockSize: 1048576, threads: 1, subGroupSize: 1e9 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("options", () => {
  it("are frozen, with null for what was not given", () => {
    const o = parseDeepSpeedOptions({ stage: 3 });
    expect(Object.isFrozen(o)).toBe(true);
    expect(o.stage).toBe(3);
    expect(o.offloadOptimizer).toBeNull();
    expect(o.timeoutMs).toBe(30 * 60 * 1000);
  });

  it.each([
    [{ stage: 4 }, "stage", /option stage: got 4; expected 0, 1, 2 or 3/],
    [{ offload_optimizer: true }, "offload_optimizer", /unknown option\(s\) "offload_optimizer"; allowed options are .*offloadOptimizer/],
    [{ offloadParamsDevice: "disk" }, "offloadParamsDevice", /got "disk"; expected "cpu" or "nvme"/],
    [{ reduceBucketSize: -5 }, "reduceBucketSize", /expected a positive integer number of elements/],
    [{ offloadOptimizerDevice: "cpu" }, "offloadOptimizerDevice", /offloadOptimizer is not on; add offloadOptimizer: true/],
    [{ nvmePath: "/mnt/nvme" }, "nvmePath", /nothing is offloaded to NVMe/],
    [{ config: join(CONFIGS, "missing.json") }, "config", /there is no such file/],
  ])("%j is refused naming %s", (options, option, message) => {
    let error: unknown;
    try {
      new DeepSpeedStrategy(options as never);
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(DeepSpeedOptionError);
    expect((error as DeepSpeedOptionError).option).toBe(option);
    expect((error as Error).message).toMatch(message);
  });

  it("a file that is not JSON is named with the parser's message", () => {
    const path = join(scratch, "bad.json");
    writeFileSync(path, "{ stage: 3 }");
    expect(() => new DeepSpeedStrategy({ config: path })).toThrow(/bad\.json" is not JSON/);
  });
});

describe("configs", () => {
  it("every problem at once, at construction: the schema's, accumulation, and options that disagree", () => {
    const err = configError(() => new DeepSpeedStrategy({ stage: 2, config: join(CONFIGS, "broken.json") }, "deepspeed_stage_2"));
    expect(err.problems.map((p) => p.path)).toEqual([
      "zero_optimization.stage3_param_persitance_threshold",
      "zero_optimization.offload_param.device",
      "bf16.enabled",
      "train_batch_size",
      "gradient_accumulation_steps",
      "zero_optimization.stage",
    ]);
    expect(err.message).toMatch(/^deepspeed_stage_2: the config ".*broken\.json" has 6 problems:/);
    expect(err.message).toContain("gradient accumulation comes from the Trainer's accumulateGradBatches");
    expect(err.message).toMatch(/zero_optimization.stage is 3 in the config ".*broken.json", but the option stage/);
    expect(err.message).toContain("asks for 2; make them agree, or use the strategy \"deepspeed\"");
  });

  it('"auto" accumulation is taken; an option fills in what the config leaves out', () => {
    const s = new DeepSpeedStrategy({ stage: 3, offloadOptimizer: true, config: { gradient_accumulation_steps: "auto", zero_optimization: { stage: "auto" } } });
    expect(s.stage).toBe(3);
    expect(s.config).toEqual({ gradient_accumulation_steps: "auto", zero_optimization: { stage: 3, offload_optimizer: { device: "cpu" } } });
    expect(Object.isFrozen(s.config.zero_optimization)).toBe(true);
  });

  it("the caller's config object is never written to", () => {
    const mine = { zero_optimization: { stage: 1 } };
    new DeepSpeedStrategy({ offloadOptimizer: true, config: mine });
    expect(mine).toEqual({ zero_optimization: { stage: 1 } });
  });

  it.each([
    [{}, 0, "a config without a stage is DeepSpeed's ZeRO off"],
    [{ zero_optimization: { stage: "auto" } }, 2, '"auto" is Lightning\'s default'],
    [{ zero_optimization: true }, 1, "the old boolean form: true is stage 1"],
    [{ zero_optimization: false }, 0, "false is ZeRO off"],
  ])("stage of %j is %i (%s)", (config, stage, _why) => {
    expect(new DeepSpeedStrategy({ config }).stage).toBe(stage);
  });

  it("without a config the stage is 2, and the deprecated cpu_offload is offload_optimizer cpu", () => {
    expect(new DeepSpeedStrategy().stage).toBe(2);
    expect(new DeepSpeedStrategy({ config: { zero_optimization: { stage: 2, cpu_offload: true } } }).plan.offloadOptimizer).toBe("cpu");
  });

  it(`is read from ${CONFIG_ENV} when the option is not given, and the option wins`, () => {
    const env = { [CONFIG_ENV]: join(CONFIGS, "zero3-env.json") };
    const plan = resolvePlan(parseDeepSpeedOptions({}), "deepspeed", env);
    expect(plan.stage).toBe(3);
    expect(plan.source).toContain(`(from ${CONFIG_ENV})`);
    expect([plan.prefetchBucket, plan.maxLiveParameters, plan.gradientClipping]).toEqual([30000, 1000000, 0.5]);
    expect(resolvePlan(parseDeepSpeedOptions({ config: { zero_optimization: { stage: 1 } } }), "deepspeed", env).stage).toBe(1);
    expect(() => resolvePlan(parseDeepSpeedOptions({}), "deepspeed", { [CONFIG_ENV]: "/no/such.json" })).toThrow(
      new RegExp(`environment variable ${CONFIG_ENV}: got "/no/such.json"; there is no such file`),
    );
  });

  it("made by the registry, a config that cannot run is refused at launch and setup, so a bad environment variable never stops the package loading", async () => {
    process.env[CONFIG_ENV] = join(CONFIGS, "zero3-env.json");
    try {
      const s = StrategyRegistry.create("deepspeed_stage_1") as DeepSpeedStrategy;
      expect(() => s.plan).toThrow(ZeroConfigError);
      await expect(s.launch({ devices: 2, numNodes: 1, script: "x.mjs", argv: [] })).rejects.toThrow(/zero_optimization\.stage is 3 .* asks for 1/);
      await expect(s.setup({} as never)).rejects.toThrow(ZeroConfigError);
      expect((StrategyRegistry.create("deepspeed") as DeepSpeedStrategy).stage).toBe(3);
      expect(() => new DeepSpeedStrategy({ stage: 1 })).toThrow(ZeroConfigError);
    } finally {
      delete process.env[CONFIG_ENV];
    }
  });

  it("a real Hugging Face ZeRO-3 config with \"auto\" everywhere is accepted", () => {
    const s = new DeepSpeedStrategy({ config: join(CONFIGS, "hf-zero3-offload.json") });
    expect([s.stage, s.plan.offloadOptimizer, s.plan.offloadParam, s.plan.gradientClipping, s.plan.fp16Enabled]).toEqual([3, "cpu", "cpu", null, null]);
  });
});

describe("what the Trainer fills in", () => {
  const plan = (config: Record<string, unknown>) => new DeepSpeedStrategy({ config }).plan;

  it("precision blocks: \"auto\" takes the precision; an explicit value must agree with it", () => {
    expect(precisionProblems(plan({ fp16: { enabled: "auto" }, bf16: { enabled: "auto" } }), "bf16-mixed")).toEqual([]);
    expect(precisionProblems(plan({ bf16: { enabled: true } }), "bf16-true")).toEqual([]);
    const [fp16] = precisionProblems(plan({ fp16: { enabled: true } }), "bf16-mixed");
    expect(fp16.message).toMatch(/fp16\.enabled is true in the config object, but the Trainer's precision is "bf16-mixed"; .*use precision "16-mixed"/);
    const [bf16] = precisionProblems(plan({ bf16: { enabled: false } }), "bf16-mixed");
    expect(bf16.path).toBe("bf16.enabled");
  });

  it("clipping: the config's by norm when the Trainer sets none; equal values pass; different ones are refused", () => {
    expect(clippingFor(plan({ gradient_clipping: 1.5 }), {})).toEqual({ step: { gradientClipVal: 1.5, gradientClipAlgorithm: "norm" }, problem: null });
    expect(clippingFor(plan({ gradient_clipping: 0 }), {}).step).toEqual({});
    expect(clippingFor(plan({ gradient_clipping: "auto" }), { gradientClipVal: 0.3 }).step).toEqual({ gradientClipVal: 0.3 });
    expect(clippingFor(plan({ gradient_clipping: 1 }), { gradientClipVal: 1 }).problem).toBeNull();
    expect(clippingFor(plan({ gradient_clipping: 1 }), { gradientClipVal: 0.5 }).problem?.message).toMatch(
      /gradient_clipping is 1 in the config object, but the Trainer's gradientClipVal is 0\.5/,
    );
    expect(clippingFor(plan({ gradient_clipping: 1 }), { gradientClipVal: 1, gradientClipAlgorithm: "value" }).problem?.message).toMatch(/clips by value/);
  });

  it("the batch-size rule, with the Trainer's accumulation as gradient_accumulation_steps", () => {
    expect(batchSizeProblems(plan({ train_batch_size: 24 }), 3, 2)).toEqual([]);
    expect(batchSizeProblems(plan({ train_micro_batch_size_per_gpu: "auto" }), 3, 2)).toEqual([]);
    const [p] = batchSizeProblems(plan({ train_batch_size: 32, train_micro_batch_size_per_gpu: 4 }), 2, 2);
    expect(p.message).toMatch(/train_batch_size 32 does not equal .* = 16.*gradient_accumulation_steps 2 is the Trainer's accumulateGradBatches/);
  });

  it('"auto" batch sizes are filled from the loader\'s batch size, the accumulation and the world; explicit ones are checked with all three named', () => {
    const both = plan({ train_batch_size: "auto", train_micro_batch_size_per_gpu: "auto" });
    expect(resolveTrainerBatch(both, 2, 3, 4)).toEqual({ problems: [], sizes: { train_batch_size: 24, train_micro_batch_size_per_gpu: 4, gradient_accumulation_steps: 3 } });
    // No config keys at all: the same numbers, from the loader.
    expect(resolveTrainerBatch(plan({}), 2, 3, 4).sizes?.train_batch_size).toBe(24);
    // An explicit train_batch_size that agrees with the loader's micro-batch.
    expect(resolveTrainerBatch(plan({ train_batch_size: 24, train_micro_batch_size_per_gpu: "auto" }), 2, 3, 4).problems).toEqual([]);
    // One that does not: refused naming micro-batch × accumulation × world.
    const [wrong] = resolveTrainerBatch(plan({ train_batch_size: 32, train_micro_batch_size_per_gpu: "auto" }), 2, 3, 4).problems;
    expect(wrong.path).toBe("train_batch_size");
    expect(wrong.message).toBe(
      "train_batch_size 32 does not equal train_micro_batch_size_per_gpu 4 × gradient_accumulation_steps 3 × data-parallel world size 2 = 24; " +
        'DeepSpeed stops at start-up with "Check batch related parameters". (gradient_accumulation_steps 3 is the Trainer\'s accumulateGradBatches.)',
    );
    // A micro-batch that is not the loader's: named with both values.
    const [micro] = resolveTrainerBatch(plan({ train_micro_batch_size_per_gpu: 8 }), 2, 3, 4).problems;
    expect(micro.path).toBe("train_micro_batch_size_per_gpu");
    expect(micro.message).toMatch(/train_micro_batch_size_per_gpu is 8 in the config object, but the Trainer's DataLoader gives batches of 4/);
    // Outside a Trainer's fit (no loader) with "auto": nothing known, nothing refused.
    expect(resolveTrainerBatch(both, 2, 3, null)).toEqual({ problems: [], sizes: null });
  });
});
