/**
 * `fulgur fit --config file.yaml [--set key=value ...]`: trains the reference GPT on byte-level text
 * from a config file, through the same Trainer a script would use. The config is checked in full
 * before anything is read or trained; what remains is the Trainer's own run.
 */
import { Command, Option } from "commander";
import { isLaunching } from "@fulgur/core";
import { DataLoader, type Dataset, TextDataset, Trainer } from "@fulgur/trainer";
import { GPTLanguageModel } from "@fulgur/trainer/demos";
import { UsageError } from "../errors";
import type { CliContext } from "../context";
import { type FitConfig, type Override, applyOverrides, loadConfigFile, parseOverride, validateFitConfig } from "../fit/config";
import { collect } from "../parsers";

/** A contiguous range of another dataset's samples (the validation split is the tail). */
class RangeDataset<T> implements Dataset<T> {
  constructor(
    private readonly base: Dataset<T>,
    private readonly start: number,
    readonly length: number,
  ) {}
  get(index: number): T {
    if (!Number.isInteger(index) || index < 0 || index >= this.length) {
      throw new RangeError(`dataset index ${index} is out of range for ${this.length} samples`);
    }
    return this.base.get(this.start + index);
  }
}

export interface FitResult {
  readonly steps: number;
  readonly loss: number;
  readonly valLoss: number | undefined;
  /** The last checkpoint written, if checkpointing was on. */
  readonly checkpoint: string | null;
  readonly logDir: string;
}

/** Loads, overrides and validates a config: what `fulgur fit` does before training. */
export function resolveFitConfig(file: string, overrides: readonly Override[] = []): FitConfig {
  return validateFitConfig(applyOverrides(loadConfigFile(file), overrides), file);
}

function datasets(cfg: FitConfig): { train: Dataset<Int32Array>; val: Dataset<Int32Array> | null; blocks: number } {
  const all = new TextDataset(cfg.data.paths, { seqLen: cfg.data.seqLen });
  const nVal = Math.floor(all.length * cfg.data.valFraction);
  if (cfg.data.valFraction > 0 && nVal === 0) {
    throw new UsageError(
      `data.valFraction: got ${cfg.data.valFraction}; ${cfg.data.valFraction} of the ${all.length} samples of seqLen ${cfg.data.seqLen} is less than one sample (give more text or a larger fraction)`,
    );
  }
  if (all.length - nVal < 1) throw new UsageError(`data.valFraction: got ${cfg.data.valFraction}; no training samples would be left`);
  return {
    train: nVal ? new RangeDataset(all, 0, all.length - nVal) : all,
    val: nVal ? new RangeDataset(all, all.length - nVal, nVal) : null,
    blocks: all.length,
  };
}

/** Trains as the config says; returns what was done (rank 0's view in a multi-process job). */
export async function runFit(cfg: FitConfig, ctx: CliContext): Promise<FitResult | null> {
  const { train, val, blocks } = datasets(cfg);
  const seed = (cfg.trainer.seed as number | undefined) ?? cfg.model.seed ?? 0;
  const trainLoader = new DataLoader(train, { batchSize: cfg.data.batchSize, shuffle: cfg.data.shuffle, seed });
  const valLoader = val ? new DataLoader(val, { batchSize: cfg.data.batchSize }) : null;
  const module = new GPTLanguageModel({ ...cfg.model, config: cfg.model.config });
  const trainer = new Trainer(cfg.trainer);
  const quietRank = process.env.RANK !== undefined && process.env.RANK !== "0";
  if (!quietRank) {
    const c = cfg.model.config;
    ctx.io.err(
      `fulgur fit: GPT dModel=${c.dModel} nLayers=${c.nLayers} nHeads=${c.nHeads} seqLen=${c.seqLen} vocab=${c.vocabSize}; ` +
        `${blocks} samples of ${cfg.data.seqLen + 1} tokens (${train.length} train, ${val?.length ?? 0} val), batch ${cfg.data.batchSize}\n`,
    );
  }
  await trainer.fit(module, trainLoader, valLoader, { ckptPath: cfg.ckptPath });
  // A launching strategy re-ran this command once per rank; the ranks did the work and reported it.
  const launcher = trainer.strategy && isLaunching(trainer.strategy) && process.env.RANK === undefined && trainer.worldSize > 1;
  if (launcher || !trainer.isGlobalZero) return null;
  const mc = trainer.modelCheckpoint;
  return {
    steps: trainer.globalStep,
    loss: trainer.lastLoss,
    valLoss: trainer.callbackMetrics["val_loss"],
    checkpoint: mc?.lastPath ?? mc?.bestModelPath ?? null,
    logDir: trainer.logDir,
  };
}

export function fitCommand(ctx: CliContext): Command {
  return new Command("fit")
    .description("train the reference GPT from a YAML or JSON config file")
    .requiredOption("-c, --config <file>", "config file (.yaml, .yml or .json)")
    .addOption(
      new Option("--set <key=value>", "override a config field (repeatable); numbers and booleans are typed, [..] and {..} are JSON")
        .argParser(collect(parseOverride))
        .default([]),
    )
    .option("--dry-run", "validate the config and print it resolved, without training")
    .option("--ignore-memory-plan", "launch even when the memory plan says the strategy does not fit (trainer.ignoreMemoryPlan)")
    .addHelpText(
      "after",
      `
Config (YAML or JSON; relative paths are relative to the config file):
  model:   { config: tiny | small | 1b | { dModel, nLayers, nHeads, seqLen }, lr, weightDecay, warmupSteps, totalSteps, seed }
  data:    { paths: [dir or file, ...], batchSize, seqLen?, shuffle?, valFraction? }
  trainer: { maxSteps, maxEpochs, precision, accelerator, devices, strategy, machine: { gpuMemory, hostMemory, diskSpace }, ... }   (Trainer options)
  ckptPath: checkpoint to resume from

Examples:
  $ fulgur fit --config gpt.yaml
  $ fulgur fit --config gpt.yaml --set trainer.maxSteps=10 --set model.lr=1e-3
  $ fulgur fit --config gpt.json --set trainer.devices=2 --set trainer.strategy=ddp
  $ fulgur fit --config gpt.yaml --dry-run
  $ fulgur fit --config gpt.yaml --set trainer.strategy=auto --ignore-memory-plan`,
    )
    .action(async (opts: { config: string; set: Override[]; dryRun?: boolean; ignoreMemoryPlan?: boolean }) => {
      const resolved = resolveFitConfig(opts.config, opts.set);
      const cfg = opts.ignoreMemoryPlan ? { ...resolved, trainer: { ...resolved.trainer, ignoreMemoryPlan: true } } : resolved;
      if (opts.dryRun) {
        ctx.io.out(JSON.stringify(cfg, null, 2) + "\n");
        return;
      }
      const result = await runFit(cfg, ctx);
      if (!result) return;
      const parts = [`${result.steps} steps`, `train_loss ${result.loss.toFixed(4)}`];
      if (result.valLoss !== undefined) parts.push(`val_loss ${result.valLoss.toFixed(4)}`);
      ctx.io.out(`fit done: ${parts.join(", ")}\n`);
      ctx.io.out(`logs: ${result.logDir}\n`);
      if (result.checkpoint) ctx.io.out(`checkpoint: ${result.checkpoint}\n`);
    });
}
