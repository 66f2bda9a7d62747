/**
 * The GPT demo: trains the `small` GPT (0.9M parameters) on this repository's own text, byte-level,
 * on the CPU unless a GPU is there, shows the loss falling, saves checkpoints and resumes from them.
 *
 *   npm start                          # train for 60 steps (a few minutes on a CPU core)
 *   npm start -- --resume --max-steps 100   # continue from the last checkpoint
 *   npm start -- --data ~/corpus --config tiny
 */
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { GPT, GPT_CONFIGS } from "@fulgur/nn";
import { type Tensor, manualSeed } from "@fulgur/tensor";
import { type Callback, DataLoader, ModelCheckpoint, TextDataset, Trainer, TrainingModule } from "@fulgur/trainer";
import { GPTLanguageModel, type GPTLanguageModelOptions } from "@fulgur/trainer/demos";
import { type DataFingerprint, defaultCorpus, describeDataChange, fingerprint } from "./corpus";
import { demoCommand, readOptions } from "./options";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const defaultData = ["README.md", "docs", "packages", "examples"].map((p) => join(repoRoot, p)).filter(existsSync);

/**
 * The GPT of the guides, plus what the demo needs: the loss logged as the mean over ranks (the
 * Trainer's own is rank 0's), and the data's fingerprint kept in every checkpoint and compared on
 * resume.
 */
class DemoLanguageModel extends GPTLanguageModel {
  constructor(
    hp: GPTLanguageModelOptions,
    private readonly data: DataFingerprint,
  ) {
    super(hp);
  }

  override trainingStep(batch: Tensor): Tensor {
    const loss = super.trainingStep(batch);
    // syncDist: averaged over ranks before it is logged (one all-reduce of a number per step).
    this.log("loss", loss, { syncDist: true, progBar: true });
    return loss;
  }

  override onSaveCheckpoint(meta: Record<string, unknown>): void {
    meta.data = this.data;
  }

  override onLoadCheckpoint(meta: Record<string, unknown>): void {
    const change = describeDataChange(meta.data, this.data);
    if (change && this.trainer?.isGlobalZero !== false) {
      console.warn(`warning: the training data differs from the checkpoint's: ${change}. The resumed run continues on different data.`);
    }
  }
}

/** Remembers the first and last loss (the mean over ranks) so the demo can say how far it fell. */
class LossSummary implements Callback {
  first = NaN;
  last = NaN;
  onTrainBatchEnd(trainer: Trainer, _m: TrainingModule, loss: number): void {
    if (!Number.isFinite(loss)) return;
    const mean = trainer.progressBarMetrics.loss ?? loss;
    if (Number.isNaN(this.first)) this.first = mean;
    this.last = mean;
  }
}

async function main(): Promise<void> {
  const cmd = demoCommand(defaultData);
  cmd.parse();
  const o = readOptions(cmd);
  const cfg = GPT_CONFIGS[o.config];
  manualSeed(o.seed);
  // The repository's own text, without what builds and runs generate (docs/api, dist, runs...).
  const files = cmd.getOptionValueSource("data") === "default" ? defaultCorpus(repoRoot, o.data) : o.data;
  const data = new TextDataset(files, { seqLen: cfg.seqLen });
  const batchSize = o.batchSize ?? cfg.microBatch;
  const loader = new DataLoader(data, { batchSize, shuffle: true, seed: o.seed, dropLast: true });
  const out = resolve(o.out);
  const ckptDir = join(out, "checkpoints");
  const last = join(ckptDir, "last.safetensors");
  const ckptPath = o.ckptPath ?? (o.resume ? last : undefined);
  if (ckptPath && !existsSync(ckptPath)) {
    throw new Error(`--resume: no checkpoint at ${ckptPath}; train once without --resume first (or pass --ckpt-path)`);
  }
  if (!ckptPath && !o.overwrite && existsSync(last)) {
    // ModelCheckpoint would refuse to replace it with an earlier step; say it in this command's terms.
    throw new Error(`${last} exists from an earlier run: continue it with --resume, start over with --overwrite, or write elsewhere with --out <dir>`);
  }
  const module = new DemoLanguageModel(
    {
      config: o.config,
      lr: o.lr,
      warmupSteps: Math.min(o.warmupSteps, o.maxSteps),
      totalSteps: o.maxSteps,
      seed: o.seed,
    },
    fingerprint(data.files, data.tokens, repoRoot),
  );
  const summary = new LossSummary();
  const trainer = new Trainer({
    accelerator: o.accelerator as "auto",
    devices: o.devices,
    strategy: o.strategy,
    precision: o.precision,
    maxSteps: o.maxSteps,
    logEveryNSteps: o.logEveryNSteps,
    defaultRootDir: out,
    enableProgressBar: o.progressBar,
    callbacks: [
      summary,
      new ModelCheckpoint({ dirpath: ckptDir, everyNTrainSteps: o.everyNSteps, saveTopK: 1, saveLast: true, overwriteLaterStep: o.overwrite }),
    ],
  });
  const params = new GPT(o.config, { seed: 0 }).numParameters();
  console.log(`Fulgur GPT demo: ${o.config} (${params.toLocaleString("en-US")} parameters), ${data.tokens.length.toLocaleString("en-US")} bytes from ${data.files.length} files, batch ${batchSize}x${cfg.seqLen}`);
  if (ckptPath) console.log(`resuming from ${ckptPath}`);
  await trainer.fit(module, loader, null, { ckptPath });
  if (!trainer.isGlobalZero) return;
  console.log(
    `done: ${trainer.globalStep} steps on ${trainer.strategy?.rootDevice}; loss ${summary.first.toFixed(3)} -> ${summary.last.toFixed(3)}` +
      ` (ln 256 = ${Math.log(256).toFixed(3)}); checkpoint: ${last}`,
  );
}

main().catch((err: unknown) => {
  console.error(`error: ${(err as Error).message}`);
  if (process.env.FULGUR_DEBUG) console.error(err);
  process.exit(1);
});
