/**
 * The config values that come from the Trainer, resolved where the Trainer hands them over:
 *
 * - the precision blocks (fp16, bf16): at setup, from StrategyContext.precision. "auto" takes the
 *   precision; an explicit value that disagrees with it is refused.
 * - gradient clipping: at every optimizer step, from OptimizerStepOptions (the contract). A number
 *   in the config clips by norm when the Trainer sets nothing, and must equal the Trainer's value
 *   when it sets one. Checked once earlier too, at setupModule, so the refusal comes before training.
 * - accumulation and the batch-size rule: at setupModule, from the Trainer the module belongs to
 *   (Lightning reads `lightning_module.trainer` the same way); no contract carries them yet.
 * - the micro-batch: the batch size of the loader the Trainer trains on (its `trainDataloader`,
 *   Lightning's `trainer.train_dataloader`), read at setupModule. "auto" (or absent) takes it; a
 *   number must equal it. train_batch_size "auto" is then micro × accumulation × world; a number
 *   is checked against that product with all three named (DeepSpeed's batch-size rule).
 */
import type { OptimizerStepOptions } from "@fulgur/core";
import { type BatchSizes, type ConfigProblem, resolveBatchSizes } from "@fulgur/deepspeed-config-schema";
import type { Module } from "@fulgur/nn";
import type { ZeroPlan } from "./config";

/** What the strategy needs from the Trainer that no contract hands it. */
export interface TrainerSettings {
  readonly accumulateGradBatches: number;
  readonly gradientClipVal?: number;
  readonly gradientClipAlgorithm?: "norm" | "value";
}

/** The settings of the Trainer `module` belongs to (its `trainer.options`), checked by shape; null outside a Trainer. */
export function trainerSettingsOf(module: Module): TrainerSettings | null {
  const options = (module as unknown as { trainer?: { options?: Partial<TrainerSettings> } | null }).trainer?.options;
  if (!options || !Number.isInteger(options.accumulateGradBatches)) return null;
  return options as TrainerSettings;
}

/** The batch size of the loader the module's Trainer trains on, checked by shape; null outside `fit`. */
export function loaderBatchSizeOf(module: Module): number | null {
  const loader = (module as unknown as { trainer?: { trainDataloader?: { batchSize?: unknown } | null } | null }).trainer?.trainDataloader;
  const size = loader?.batchSize;
  return Number.isInteger(size) && (size as number) >= 1 ? (size as number) : null;
}

const FP16 = new Set(["16-mixed"]);
const BF16 = new Set(["bf16-mixed", "bf16-true"]);

/** The precision blocks against the Trainer's precision. */
export function precisionProblems(plan: ZeroPlan, precision: string): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const check = (block: "fp16" | "bf16", enabled: boolean | null, names: ReadonlySet<string>): void => {
    if (enabled === null || enabled === names.has(precision)) return;
    const want = [...names].map((n) => `"${n}"`).join(" or ");
    problems.push({
      code: "conflict",
      path: `${block}.enabled`,
      value: enabled,
      message: enabled
        ? `${block}.enabled is true in ${plan.source}, but the Trainer's precision is "${precision}"; in Fulgur the precision decides: use precision ${want}, or set ${block}.enabled to "auto"`
        : `${block}.enabled is false in ${plan.source}, but the Trainer's precision is "${precision}"; set ${block}.enabled to "auto" or true, or choose another precision`,
    });
  };
  check("fp16", plan.fp16Enabled, FP16);
  check("bf16", plan.bf16Enabled, BF16);
  return problems;
}

/** Why the config's gradient_clipping and the Trainer's clipping cannot both hold, or null. */
export function clippingProblem(plan: ZeroPlan, clipVal: number | undefined, algorithm: "norm" | "value" | undefined): ConfigProblem | null {
  const mine = plan.gradientClipping;
  if (mine === null || clipVal === undefined) return null;
  const base = { code: "conflict" as const, path: "gradient_clipping", value: mine };
  if ((algorithm ?? "norm") === "value") {
    return { ...base, message: `gradient_clipping is ${mine} in ${plan.source}, a clip by norm, but the Trainer clips by value (gradientClipAlgorithm "value"); keep one of them` };
  }
  if (clipVal === mine) return null;
  return { ...base, suggestion: '"auto"', message: `gradient_clipping is ${mine} in ${plan.source}, but the Trainer's gradientClipVal is ${clipVal}; make them equal, or set gradient_clipping to "auto"` };
}

/**
 * The clipping the step applies: the Trainer's, else the config's by norm (0 is DeepSpeed's
 * "none"); `problem` is set when the two disagree.
 */
export function clippingFor(plan: ZeroPlan, options: OptimizerStepOptions): { readonly step: OptimizerStepOptions; readonly problem: ConfigProblem | null } {
  const problem = clippingProblem(plan, options.gradientClipVal, options.gradientClipAlgorithm);
  if (options.gradientClipVal !== undefined || plan.gradientClipping === null) return { step: options, problem };
  const step = plan.gradientClipping > 0 ? { gradientClipVal: plan.gradientClipping, gradientClipAlgorithm: "norm" as const } : {};
  return { step, problem };
}

/** The batch sizes a run trains with, or the reasons they cannot hold. */
export interface BatchSizeResolution {
  readonly problems: readonly ConfigProblem[];
  /** The three numbers, when known (the micro-batch from the config or the loader). */
  readonly sizes: BatchSizes | null;
}

/**
 * The batch-size rule with the Trainer's accumulation, the world size and, when known, the
 * loader's batch size as the micro-batch (DeepSpeed checks the rule at start-up). "auto" or absent
 * batch sizes are filled: the micro-batch from the loader, train_batch_size as the product.
 */
export function resolveTrainerBatch(plan: ZeroPlan, worldSize: number, accumulate: number, loaderBatch: number | null): BatchSizeResolution {
  const { train, micro } = plan.batch;
  const note = ` (gradient_accumulation_steps ${accumulate} is the Trainer's accumulateGradBatches.)`;
  if (micro !== null && loaderBatch !== null && micro !== loaderBatch) {
    return {
      sizes: null,
      problems: [
        {
          code: "conflict",
          path: "train_micro_batch_size_per_gpu",
          value: micro,
          suggestion: '"auto"',
          message:
            `train_micro_batch_size_per_gpu is ${micro} in ${plan.source}, but the Trainer's DataLoader gives batches of ${loaderBatch}; ` +
            "the loader's batch size is the micro-batch here: make them equal, or set train_micro_batch_size_per_gpu to \"auto\"",
        },
      ],
    };
  }
  const given: Record<string, number> = { gradient_accumulation_steps: accumulate };
  if (train !== null) given.train_batch_size = train;
  const microBatch = micro ?? loaderBatch;
  if (microBatch !== null) given.train_micro_batch_size_per_gpu = microBatch;
  // Nothing to check or fill: neither batch size known (no loader, both "auto" or absent).
  if (train === null && microBatch === null) return { problems: [], sizes: null };
  const resolution = resolveBatchSizes(given, worldSize);
  if (!resolution.resolved) return { sizes: null, problems: resolution.problems.map((p) => ({ ...p, message: `${p.message}${note}` })) };
  return { problems: [], sizes: resolution.values };
}

/** The problems of resolveTrainerBatch without a loader (the config's numbers alone). */
export function batchSizeProblems(plan: ZeroPlan, worldSize: number, accumulate: number, loaderBatch: number | null = null): readonly ConfigProblem[] {
  return resolveTrainerBatch(plan, worldSize, accumulate, loaderBatch).problems;
}
