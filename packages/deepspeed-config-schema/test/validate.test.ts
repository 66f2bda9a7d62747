/** validate(), assertValid() and formatProblems() beyond the fixtures: the rules, the options, the words. */
import { describe, expect, it } from "vitest";
import { type DeepSpeedConfig, DeepSpeedConfigError, assertValid, formatProblems, isValidConfig, validate } from "../src/index.js";

const problemsOf = (config: unknown, options?: Parameters<typeof validate>[1]) => validate(config, options).problems;
const pathsOf = (config: unknown, options?: Parameters<typeof validate>[1]) => problemsOf(config, options).map((p) => `${p.code} ${p.path}`);

describe("validate", () => {
  it("accepts an empty config and a $schema key", () => {
    expect(validate({}).valid).toBe(true);
    expect(validate({ $schema: "./node_modules/@fulgur/deepspeed-config-schema/schema/deepspeed-config.schema.json" }).valid).toBe(true);
  });

  it("refuses a config that is not an object", () => {
    expect(problemsOf([])).toEqual([
      { code: "invalid-value", path: "", value: [], allowed: ["an object"], message: "The config is [], but it must be an object." },
    ]);
  });

  it("lists the keys known where an unknown key is found", () => {
    const [problem] = problemsOf({ fp16: { enable: true } });
    expect(problem).toMatchObject({ code: "unknown-key", path: "fp16.enable", suggestion: "fp16.enabled", value: true });
    expect(problem?.allowed).toContain("initial_scale_power");
    expect(problem?.message).toBe(
      'fp16 has no key "enable"; did you mean "enabled"? DeepSpeed would ignore it without a word and use its default.',
    );
  });

  it("says DeepSpeed refuses unknown keys in the blocks its pydantic models read", () => {
    expect(problemsOf({ zero_optimization: { offload_param: { devices: "cpu" } } })[0]?.message).toBe(
      'zero_optimization.offload_param has no key "devices"; did you mean "device"? DeepSpeed refuses unknown keys in this block at start-up.',
    );
    expect(problemsOf({ zero_optimization: { grad_hooks: true } })[0]?.message).toContain("config-json.md still documents grad_hooks");
  });

  it("quotes odd keys in paths", () => {
    expect(problemsOf({ "train batch size": 8 })[0]?.path).toBe('["train batch size"]');
  });

  it("takes DeepSpeed's optimizer names in any letter case and checks their params", () => {
    expect(validate({ optimizer: { type: "ADAMW", params: { lr: 1e-4, betas: [0.9, 0.95] } } }).valid).toBe(true);
    expect(problemsOf({ optimizer: { type: "adamw", params: { learning_rate: 1e-4 } } })[0]).toMatchObject({
      code: "unknown-key",
      path: "optimizer.params.learning_rate",
    });
  });

  it("leaves the params of other torch.optim optimizers and schedulers open", () => {
    const config = {
      optimizer: { type: "RMSprop", params: { lr: 0.01, alpha: 0.99, centered: true } },
      scheduler: { type: "StepLR", params: { step_size: 30, gamma: 0.1 } },
    };
    expect(problemsOf(config)).toEqual([]);
  });

  it("suggests the torch.optim spelling of an optimizer name", () => {
    expect(problemsOf({ optimizer: { type: "sgd" } })[0]).toMatchObject({ path: "optimizer.type", suggestion: "SGD" });
  });

  it('takes "auto" where Transformers and Accelerate fill it, for any optimizer type', () => {
    expect(validate({ optimizer: { type: "Lion", params: { lr: "auto", betas: "auto", weight_decay: "auto" } } }).valid).toBe(true);
    expect(validate({ pipeline: { stages: "auto" } }, { allowAuto: false }).valid).toBe(true);
  });

  it("reports every item of a list that is wrong, at its index", () => {
    expect(pathsOf({ optimizer: { type: "Adam", params: { betas: [1.5, "x"] } } })).toEqual([
      "invalid-value optimizer.params.betas[0]",
      "invalid-value optimizer.params.betas[1]",
    ]);
  });

  it("accepts the deprecated boolean zero_optimization", () => {
    expect(validate({ zero_optimization: true, train_batch_size: 8 }).valid).toBe(true);
  });

  it("requires the settings elastic training needs", () => {
    expect(pathsOf({ elasticity: { enabled: true } })).toEqual([
      "missing-key elasticity.max_train_batch_size",
      "missing-key elasticity.micro_batch_sizes",
    ]);
  });
});

describe("rules DeepSpeed asserts at start-up", () => {
  it("amp with ZeRO", () => {
    expect(problemsOf({ amp: { enabled: true, opt_level: "O1" }, zero_optimization: { stage: 1 } })[0]?.message).toContain(
      '"Amp and ZeRO are not currently compatible"',
    );
  });

  it("amp with bf16", () => {
    expect(pathsOf({ amp: { enabled: true }, bf16: { enabled: true } })).toEqual(["conflict amp.enabled"]);
  });

  it("a deprecated ZeRO key beside its replacement", () => {
    const problems = problemsOf({ zero_optimization: { stage: 2, cpu_offload: true, offload_optimizer: { device: "cpu" } } });
    expect(problems).toMatchObject([{ code: "conflict", path: "zero_optimization.cpu_offload", suggestion: "zero_optimization.offload_optimizer" }]);
  });

  it("partial optimizer offload below ZeRO stage 3", () => {
    expect(pathsOf({ zero_optimization: { stage: 2, offload_optimizer: { device: "cpu", ratio: 0.3 } } })).toEqual([
      "conflict zero_optimization.offload_optimizer.ratio",
    ]);
    expect(validate({ zero_optimization: { stage: 3, offload_optimizer: { device: "cpu", ratio: 0.3 } } }).valid).toBe(true);
  });

  it("fp16_master_weights_and_grads outside ZeRO stage 2", () => {
    expect(pathsOf({ fp16: { enabled: true, fp16_master_weights_and_grads: true }, zero_optimization: { stage: 3 } })).toEqual([
      "conflict fp16.fp16_master_weights_and_grads",
    ]);
  });

  it("1-bit optimizers are fine without ZeRO", () => {
    expect(validate({ optimizer: { type: "OneBitLamb", params: { lr: 1e-3 } } }).valid).toBe(true);
  });

  it("batch sizes beside enabled elasticity", () => {
    const config = { train_batch_size: 64, elasticity: { enabled: true, max_train_batch_size: 2000, micro_batch_sizes: [2, 4] } };
    expect(pathsOf(config)).toEqual(["conflict train_batch_size"]);
    expect(validate({ ...config, elasticity: { ...config.elasticity, ignore_non_elastic_batch_info: true } }).valid).toBe(true);
  });
});

describe("worldSize", () => {
  it("is checked to be a positive integer", () => {
    expect(() => validate({}, { worldSize: 0 })).toThrow(RangeError);
  });

  it("asks for train_batch_size or the micro-batch once a world size is given", () => {
    expect(pathsOf({ zero_optimization: { stage: 2 } }, { worldSize: 8 })).toEqual(["batch-size train_batch_size"]);
  });

  it("does not repeat a batch-size key the schema already refused", () => {
    expect(pathsOf({ train_batch_size: -4, train_micro_batch_size_per_gpu: 2 }, { worldSize: 2 })).toEqual(["invalid-value train_batch_size"]);
  });
});

describe("assertValid and formatProblems", () => {
  const broken = { zero_optimization: { stage: 5 }, fp16: { enabled: "yes" } };

  it("throws one error listing every problem", () => {
    let caught: unknown;
    try {
      assertValid(broken);
    } catch (error) {
      caught = error;
    }
    expect(caught).toBeInstanceOf(DeepSpeedConfigError);
    const error = caught as DeepSpeedConfigError;
    expect(error.problems).toHaveLength(2);
    expect(error.message).toBe(
      [
        "DeepSpeed config: 2 problems:",
        '  1. fp16.enabled is "yes", but it must be true/false or "auto".',
        '  2. zero_optimization.stage is 5, but it must be an integer from 0 to 3 or "auto".',
      ].join("\n"),
    );
  });

  it("narrows a valid config to DeepSpeedConfig", () => {
    const config: unknown = { train_micro_batch_size_per_gpu: 4 };
    assertValid(config);
    const typed: DeepSpeedConfig = config;
    expect(typed.train_micro_batch_size_per_gpu).toBe(4);
    expect(isValidConfig(broken)).toBe(false);
  });

  it("formats no problems and a custom heading", () => {
    expect(formatProblems([])).toBe("DeepSpeed config: no problems.");
    expect(formatProblems(validate({ fp16: { enabled: 1 } }).problems, { heading: "ds_config.json:" })).toBe(
      'ds_config.json:\n  1. fp16.enabled is 1, but it must be true/false or "auto".',
    );
  });
});
