/**
 * Real configs from DeepSpeed's documentation, its repository, DeepSpeedExamples and the Hugging
 * Face and Lightning guides (sources in fixtures/README.md) must validate; the broken ones under
 * fixtures/invalid must fail with the problems written down here.
 */
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { type ConfigProblem, type ValidateOptions, validate } from "../src/index.js";

const FIXTURES = join(import.meta.dirname, "fixtures");
const load = (folder: string, file: string): unknown => JSON.parse(readFileSync(join(FIXTURES, folder, file), "utf8"));
const listed = (folder: string): string[] => readdirSync(join(FIXTURES, folder)).filter((file) => file.endsWith(".json")).sort();

describe("valid fixtures", () => {
  const files = listed("valid");

  it("has at least 15 real configs", () => {
    expect(files.length).toBeGreaterThanOrEqual(15);
  });

  it.each(files)("%s validates", (file) => {
    const { valid, problems } = validate(load("valid", file));
    expect(problems).toEqual([]);
    expect(valid).toBe(true);
  });
});

describe("fixture sources", () => {
  const readme = readFileSync(join(FIXTURES, "README.md"), "utf8");
  it.each([...listed("valid").map((f) => ["valid", f]), ...listed("invalid").map((f) => ["invalid", f])])(
    "%s/%s has its source in fixtures/README.md",
    (_folder, file) => {
      expect(readme).toContain(`| \`${file}\` |`);
    },
  );
});

/** The part of a problem a test pins down; message is matched as a substring. */
type Expected = Pick<ConfigProblem, "code" | "path"> & { readonly message?: string; readonly suggestion?: string };

interface InvalidCase {
  readonly file: string;
  readonly options?: ValidateOptions;
  readonly expected: readonly Expected[];
}

const INVALID: readonly InvalidCase[] = [
  {
    file: "dsexamples-zero-infinity-misspelled-key.json",
    expected: [
      {
        code: "unknown-key",
        path: "zero_optimization.stage3_param_persitance_threshold",
        suggestion: "zero_optimization.stage3_param_persistence_threshold",
        message: 'zero_optimization has no key "stage3_param_persitance_threshold"; did you mean "stage3_param_persistence_threshold"?',
      },
    ],
  },
  {
    file: "hf-transformers-guide-zero3-nvme-aio-nested.json",
    expected: [
      { code: "unknown-key", path: "zero_optimization.aio", suggestion: "aio", message: 'zero_optimization has no key "aio"; it belongs at the top level.' },
    ],
  },
  {
    file: "ds-bert-pretraining-max-grad-norm.json",
    expected: [
      { code: "conflict", path: "optimizer.params.max_grad_norm", suggestion: "gradient_clipping", message: "clip gradients with the top-level gradient_clipping instead" },
    ],
  },
  {
    file: "lightning-custom-config-onebit-adam-with-zero.json",
    expected: [{ code: "conflict", path: "optimizer.type", message: 'optimizer.type is "OneBitAdam" with ZeRO stage 2' }],
  },
  {
    file: "ds-test-torch-compile-bf16-loss-scale.json",
    expected: [
      { code: "unknown-key", path: "bf16.loss_scale", suggestion: "fp16.loss_scale", message: 'bf16 has no key "loss_scale"; it belongs in fp16.loss_scale or in amp.loss_scale.' },
      { code: "unknown-key", path: "bf16.loss_scale_window", suggestion: "fp16.loss_scale_window" },
      { code: "unknown-key", path: "bf16.hysteresis", suggestion: "fp16.hysteresis" },
      { code: "unknown-key", path: "bf16.min_loss_scale", suggestion: "fp16.min_loss_scale" },
      { code: "unknown-key", path: "bf16.initial_scale_power", suggestion: "fp16.initial_scale_power", message: "DeepSpeed would ignore it without a word" },
    ],
  },
  {
    file: "wrong-types.json",
    expected: [
      { code: "invalid-value", path: "train_batch_size", suggestion: "32", message: 'train_batch_size is "32", but it must be an integer ≥ 1 or "auto". Write it without quotes.' },
      { code: "invalid-value", path: "fp16.enabled", message: 'fp16.enabled is "true", but it must be true/false or "auto". Write it without quotes.' },
      { code: "invalid-value", path: "zero_optimization.reduce_bucket_size", message: 'is 500000000.5, but it must be an integer ≥ 0 or "auto".' },
      { code: "invalid-value", path: "zero_optimization.overlap_comm", message: "zero_optimization.overlap_comm is 1, but it must be true/false or null." },
    ],
  },
  {
    file: "stage-out-of-range.json",
    expected: [{ code: "invalid-value", path: "zero_optimization.stage", message: 'zero_optimization.stage is 4, but it must be an integer from 0 to 3 or "auto".' }],
  },
  {
    file: "offload-device-not-allowed.json",
    expected: [
      { code: "invalid-value", path: "zero_optimization.offload_param.device", suggestion: "cpu", message: 'is "gpu", but it must be one of "cpu", "nvme", "none", "auto".' },
      { code: "invalid-value", path: "zero_optimization.offload_optimizer.device", suggestion: "cpu", message: 'Did you mean "cpu"?' },
    ],
  },
  {
    file: "batch-size-rule.json",
    options: { worldSize: 2 },
    expected: [
      {
        code: "batch-size",
        path: "train_batch_size",
        suggestion: "16",
        message: "train_batch_size 32 does not equal train_micro_batch_size_per_gpu 4 × gradient_accumulation_steps 2 × data-parallel world size 2 = 16",
      },
    ],
  },
  {
    file: "batch-size-not-divisible.json",
    options: { worldSize: 2 },
    expected: [
      {
        code: "batch-size",
        path: "train_batch_size",
        message:
          "train_batch_size 30 is not a multiple of train_micro_batch_size_per_gpu 4 × data-parallel world size 2 = 8; DeepSpeed would derive gradient_accumulation_steps = 30 // 8 = 3 and then stop, since 30 ≠ 24.",
      },
    ],
  },
  {
    file: "auto-not-allowed.json",
    expected: [
      { code: "auto-not-allowed", path: "steps_per_print", message: 'steps_per_print is "auto", but nothing fills "auto" in here' },
      { code: "auto-not-allowed", path: "fp16.loss_scale", message: "it must be a number ≥ 0." },
      { code: "auto-not-allowed", path: "zero_optimization.stage3_max_live_parameters" },
    ],
  },
  {
    file: "auto-not-allowed.json",
    options: { allowAuto: false },
    expected: [
      { code: "auto-not-allowed", path: "train_batch_size", message: "DeepSpeed on its own would read the string" },
      { code: "auto-not-allowed", path: "steps_per_print" },
      { code: "auto-not-allowed", path: "fp16.enabled" },
      { code: "auto-not-allowed", path: "fp16.loss_scale" },
      { code: "auto-not-allowed", path: "zero_optimization.stage3_max_live_parameters" },
    ],
  },
  {
    file: "several-problems.json",
    options: { worldSize: 2 },
    expected: [
      { code: "unknown-key", path: "optimiser", suggestion: "optimizer" },
      { code: "invalid-value", path: "steps_per_print", message: "steps_per_print is 0, but it must be an integer ≥ 1 or null." },
      { code: "missing-key", path: "scheduler.params.total_num_steps", message: 'scheduler.params is missing "total_num_steps"' },
      { code: "unknown-key", path: "zero_optimization.overlap_com", suggestion: "zero_optimization.overlap_comm" },
      { code: "invalid-value", path: "zero_optimization.offload_param.device", message: 'is "ssd"' },
      { code: "conflict", path: "bf16.enabled", message: "fp16.enabled and bf16.enabled are both true" },
      { code: "batch-size", path: "train_batch_size", message: "train_batch_size 64 does not equal train_micro_batch_size_per_gpu 4 × gradient_accumulation_steps 4 × data-parallel world size 2 = 32" },
    ],
  },
];

describe("invalid fixtures", () => {
  it("covers every file under fixtures/invalid", () => {
    expect([...new Set(INVALID.map((c) => c.file))].sort()).toEqual(listed("invalid"));
  });

  it.each(INVALID.map((c) => [`${c.file}${c.options ? ` ${JSON.stringify(c.options)}` : ""}`, c] as const))("%s", (_name, c) => {
    const { valid, problems } = validate(load("invalid", c.file), c.options);
    expect(valid).toBe(false);
    // Every expected problem is reported, and nothing else: all at once, none twice.
    expect(problems.map((p) => `${p.code} ${p.path}`).sort()).toEqual(c.expected.map((e) => `${e.code} ${e.path}`).sort());
    for (const expected of c.expected) {
      const problem = problems.find((p) => p.code === expected.code && p.path === expected.path)!;
      if (expected.message !== undefined) expect(problem.message).toContain(expected.message);
      if (expected.suggestion !== undefined) expect(problem.suggestion).toBe(expected.suggestion);
    }
  });

  it("without a world size, a batch size that works at some world size passes", () => {
    expect(validate(load("invalid", "batch-size-rule.json")).problems).toEqual([]);
  });
});
