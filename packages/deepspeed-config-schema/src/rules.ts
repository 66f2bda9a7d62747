/**
 * Rules across fields that a schema cannot say (or says poorly), each one something DeepSpeed
 * itself asserts or raises on at start-up, so the mistake surfaces before a job is queued:
 * runtime/config.py (fp16 with bf16, fp16_master_weights_and_grads), runtime/engine.py
 * (max_grad_norm, amp with ZeRO or with fp16/bf16, 1-bit optimizers with ZeRO) and the ZeRO
 * config model (partial offload, a deprecated key beside its replacement). The batch-size rule
 * has its own module (batchSize.ts).
 */
import { type ConfigProblem, isObject } from "./problem.js";

export function crossFieldProblems(config: Record<string, unknown>): ConfigProblem[] {
  return [
    ...precisionConflicts(config),
    ...optimizerConflicts(config),
    ...zeroConflicts(config),
  ];
}

/** The ZeRO stage as DeepSpeed reads it, or undefined when it is "auto" or malformed. */
export function zeroStage(config: Record<string, unknown>): number | undefined {
  const zero = config.zero_optimization;
  if (zero === undefined) return 0;
  if (typeof zero === "boolean") return zero ? 1 : 0;
  if (!isObject(zero)) return undefined;
  if (zero.stage === undefined) return 0;
  return typeof zero.stage === "number" ? zero.stage : undefined;
}

function enabled(block: unknown): boolean {
  return isObject(block) && block.enabled === true;
}

function precisionConflicts(config: Record<string, unknown>): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const bf16Key = config.bf16 !== undefined ? "bf16" : "bfloat16";
  if (enabled(config.fp16) && enabled(config[bf16Key])) {
    problems.push({
      code: "conflict",
      path: `${bf16Key}.enabled`,
      value: true,
      message: `fp16.enabled and ${bf16Key}.enabled are both true; DeepSpeed refuses to run with both ("bfloat16 and fp16 modes cannot be simultaneously enabled"). Enable one of them.`,
    });
  }
  const halfKey = enabled(config.fp16) ? "fp16" : enabled(config[bf16Key]) ? bf16Key : undefined;
  if (enabled(config.amp) && halfKey !== undefined) {
    problems.push({
      code: "conflict",
      path: "amp.enabled",
      value: true,
      message: `amp.enabled and ${halfKey}.enabled are both true; DeepSpeed refuses the pair ("Cannot enable both amp with (legacy) fp16 or bfloat16 mode"). Enable one of them.`,
    });
  }
  const stage = zeroStage(config);
  if (enabled(config.amp) && stage !== undefined && stage > 0) {
    problems.push({
      code: "conflict",
      path: "amp.enabled",
      value: true,
      message: `amp.enabled is true with ZeRO stage ${stage}; DeepSpeed refuses the pair ("Amp and ZeRO are not currently compatible"). Use fp16 (or bf16) mode with ZeRO.`,
    });
  }
  const fp16 = config.fp16;
  if (enabled(fp16) && isObject(fp16) && fp16.fp16_master_weights_and_grads === true && stage !== undefined && stage !== 2) {
    problems.push({
      code: "conflict",
      path: "fp16.fp16_master_weights_and_grads",
      value: true,
      message: `fp16.fp16_master_weights_and_grads is true with ZeRO stage ${stage}; DeepSpeed supports it only with ZeRO stage 2.`,
    });
  }
  return problems;
}

const ONE_BIT = new Set(["onebitadam", "zerooneadam", "onebitlamb"]);

function optimizerConflicts(config: Record<string, unknown>): ConfigProblem[] {
  const optimizer = config.optimizer;
  if (!isObject(optimizer)) return [];
  const problems: ConfigProblem[] = [];
  const params = optimizer.params;
  if (isObject(params) && "max_grad_norm" in params) {
    problems.push({
      code: "conflict",
      path: "optimizer.params.max_grad_norm",
      value: params.max_grad_norm,
      suggestion: "gradient_clipping",
      message:
        "optimizer.params.max_grad_norm is refused by DeepSpeed for every optimizer type (it raises ValueError); " +
        "clip gradients with the top-level gradient_clipping instead.",
    });
  }
  const stage = zeroStage(config);
  if (typeof optimizer.type === "string" && ONE_BIT.has(optimizer.type.toLowerCase()) && stage !== undefined && stage > 0) {
    problems.push({
      code: "conflict",
      path: "optimizer.type",
      value: optimizer.type,
      message: `optimizer.type is "${optimizer.type}" with ZeRO stage ${stage}; DeepSpeed's 1-bit optimizers (OneBitAdam, ZeroOneAdam, OneBitLamb) are not compatible with ZeRO.`,
    });
  }
  return problems;
}

/** Deprecated ZeRO keys and the keys that replace them: DeepSpeed asserts they are not given together. */
const REPLACED_BY: ReadonlyArray<readonly [string, readonly string[]]> = [
  ["cpu_offload", ["offload_optimizer"]],
  ["cpu_offload_param", ["offload_param"]],
  ["stage3_gather_fp16_weights_on_model_save", ["stage3_gather_16bit_weights_on_model_save", "gather_16bit_weights_on_model_save"]],
];

function zeroConflicts(config: Record<string, unknown>): ConfigProblem[] {
  const zero = config.zero_optimization;
  if (!isObject(zero)) return [];
  const problems: ConfigProblem[] = [];
  const stage = zeroStage(config);
  const offload = zero.offload_optimizer;
  if (isObject(offload) && typeof offload.ratio === "number" && offload.ratio < 1 && stage !== undefined && stage !== 3) {
    problems.push({
      code: "conflict",
      path: "zero_optimization.offload_optimizer.ratio",
      value: offload.ratio,
      message: `zero_optimization.offload_optimizer.ratio is ${offload.ratio} with ZeRO stage ${stage}; partial offloading (a ratio below 1) works only with ZeRO stage 3.`,
    });
  }
  for (const [deprecated, replacements] of REPLACED_BY) {
    const replacement = replacements.find((key) => key in zero);
    if (deprecated in zero && replacement !== undefined) {
      problems.push({
        code: "conflict",
        path: `zero_optimization.${deprecated}`,
        value: zero[deprecated],
        suggestion: `zero_optimization.${replacement}`,
        message: `zero_optimization.${deprecated} is deprecated and is given together with its replacement ${replacement}; DeepSpeed refuses the pair. Keep only ${replacement}.`,
      });
    }
  }
  return problems;
}
