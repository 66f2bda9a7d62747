/** resolveBatchSizes derives the missing batch size as DeepSpeed's _set_batch_related_parameters does. */
import { describe, expect, it } from "vitest";
import { resolveBatchSizes } from "../src/index.js";

describe("resolveBatchSizes", () => {
  it("accepts three values that agree", () => {
    const r = resolveBatchSizes({ train_batch_size: 32, train_micro_batch_size_per_gpu: 4, gradient_accumulation_steps: 2 }, 4);
    expect(r).toMatchObject({ resolved: true, derived: [], values: { train_batch_size: 32 } });
  });

  it("names all numbers when three values disagree", () => {
    const r = resolveBatchSizes({ train_batch_size: 32, train_micro_batch_size_per_gpu: 4, gradient_accumulation_steps: 2 }, 2);
    expect(r.resolved).toBe(false);
    if (r.resolved) return;
    expect(r.problems).toHaveLength(1);
    expect(r.problems[0]).toMatchObject({ code: "batch-size", path: "train_batch_size", value: 32, suggestion: "16" });
    expect(r.reason).toBe(
      'train_batch_size 32 does not equal train_micro_batch_size_per_gpu 4 × gradient_accumulation_steps 2 × data-parallel world size 2 = 16; DeepSpeed stops at start-up with "Check batch related parameters".',
    );
  });

  it("derives gradient_accumulation_steps from train_batch_size and the micro-batch", () => {
    const r = resolveBatchSizes({ train_batch_size: 64, train_micro_batch_size_per_gpu: 4 }, 8);
    expect(r).toEqual({
      resolved: true,
      values: { train_batch_size: 64, train_micro_batch_size_per_gpu: 4, gradient_accumulation_steps: 2 },
      derived: ["gradient_accumulation_steps"],
      explanation: "gradient_accumulation_steps = train_batch_size 64 / (train_micro_batch_size_per_gpu 4 × data-parallel world size 8 = 32) = 2",
    });
  });

  it("derives the micro-batch from train_batch_size and the accumulation steps", () => {
    const r = resolveBatchSizes({ train_batch_size: 64, gradient_accumulation_steps: 4 }, 2);
    expect(r).toMatchObject({ resolved: true, values: { train_micro_batch_size_per_gpu: 8 }, derived: ["train_micro_batch_size_per_gpu"] });
  });

  it("derives train_batch_size from the micro-batch and the accumulation steps", () => {
    const r = resolveBatchSizes({ train_micro_batch_size_per_gpu: 3, gradient_accumulation_steps: 5 }, 7);
    expect(r).toMatchObject({ resolved: true, values: { train_batch_size: 105 }, derived: ["train_batch_size"] });
  });

  it("with train_batch_size alone, sets one accumulation step and splits the batch over the world", () => {
    const r = resolveBatchSizes({ train_batch_size: 16 }, 4);
    expect(r).toMatchObject({
      resolved: true,
      values: { train_batch_size: 16, train_micro_batch_size_per_gpu: 4, gradient_accumulation_steps: 1 },
      derived: ["gradient_accumulation_steps", "train_micro_batch_size_per_gpu"],
    });
  });

  it("with the micro-batch alone, sets one accumulation step", () => {
    const r = resolveBatchSizes({ train_micro_batch_size_per_gpu: 2 }, 8);
    expect(r).toMatchObject({ resolved: true, values: { train_batch_size: 16, gradient_accumulation_steps: 1 } });
  });

  it("explains a derivation that does not divide evenly, as DeepSpeed's floor division would fail it", () => {
    const r = resolveBatchSizes({ train_batch_size: 30, train_micro_batch_size_per_gpu: 4 }, 2);
    expect(r.resolved).toBe(false);
    if (r.resolved) return;
    expect(r.problems[0]?.message).toBe(
      "train_batch_size 30 is not a multiple of train_micro_batch_size_per_gpu 4 × data-parallel world size 2 = 8; DeepSpeed would derive gradient_accumulation_steps = 30 // 8 = 3 and then stop, since 30 ≠ 24.",
    );
    expect(r.problems[0]?.suggestion).toBe("32");
  });

  it("explains a derived value of zero", () => {
    const r = resolveBatchSizes({ train_batch_size: 4, gradient_accumulation_steps: 2 }, 4);
    expect(r.resolved).toBe(false);
    if (r.resolved) return;
    expect(r.reason).toContain("DeepSpeed would derive train_micro_batch_size_per_gpu = 4 // 8 = 0 and stop.");
  });

  it("needs train_batch_size or the micro-batch", () => {
    const r = resolveBatchSizes({ gradient_accumulation_steps: 2 }, 1);
    expect(r.resolved).toBe(false);
    if (r.resolved) return;
    expect(r.reason).toBe(
      "Neither train_batch_size nor train_micro_batch_size_per_gpu is given; DeepSpeed needs at least one of them (gradient_accumulation_steps alone is not enough).",
    );
  });

  it('leaves "auto" values to the integration that fills them', () => {
    const r = resolveBatchSizes({ train_batch_size: "auto", train_micro_batch_size_per_gpu: "auto", gradient_accumulation_steps: 1 }, 2);
    expect(r).toMatchObject({ resolved: false, problems: [] });
    if (!r.resolved) expect(r.reason).toContain('train_batch_size and train_micro_batch_size_per_gpu are "auto"');
  });

  it("refuses values that are not positive integers", () => {
    const r = resolveBatchSizes({ train_batch_size: 0, train_micro_batch_size_per_gpu: 2.5 }, 1);
    expect(r.resolved).toBe(false);
    if (!r.resolved) expect(r.problems.map((p) => p.path)).toEqual(["train_batch_size", "train_micro_batch_size_per_gpu"]);
  });

  it("refuses a world size that is not a positive integer", () => {
    expect(() => resolveBatchSizes({ train_batch_size: 8 }, 0)).toThrow(RangeError);
    expect(() => resolveBatchSizes({ train_batch_size: 8 }, 1.5)).toThrow("worldSize must be a positive integer");
  });
});
