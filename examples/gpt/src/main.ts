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
import { manualSeed } from "@fulgur/tensor";
import { type Callback, DataLoader, GPTLanguageModel, ModelCheckpoint, TextDataset, Trainer, TrainingModule } from "@fulgur/trainer";
import { demoCommand, readOptions } from "./options";

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const defaultData = ["README.md", "docs", "packages", "examples"].map((p) => join(repoRoot, p)).filter(existsSync);

/** Remembers the first and last loss so the demo can say how far it fell. */
class LossSummary implements Callback {
  first = NaN;
  last = NaN;
  onTrainBatchEnd(_t: Trainer, _m: TrainingModule, loss: number): void {
    if (!Number.isFinite(loss)) return;
    if (Number.isNaN(this.first)) this.first = loss;
    this.last = loss;
  }
}

async function main(): Promise<void> {
  const cmd = demoCommand(defaultData);
  cmd.parse();
  const o = readOptions(cmd);
  const cfg = GPT_CONFIGS[o.config];
  manualSeed(o.seed);
  const data = new TextDataset(o.data, { seqLen: cfg.seqLen });
  const batchSize = o.batchSize ?? cfg.microBatch;
  const loader = new DataLoader(data, { batchSize, shuffle: true, seed: o.seed, dropLast: true });
  const out = resolve(o.out);
  const ckptDir = join(out, "checkpoints");
  const ckptPath = o.ckptPath ?? (o.resume ? join(ckptDir, "last.safetensors") : undefined);
  if (ckptPath && !existsSync(ckptPath)) {
    throw new Error(`--resume: no checkpoint at ${ckptPath}; train once without --resume first (or pass --ckpt-path)`);
  }
  const module = new GPTLanguageModel({
    config: o.config,
    lr: o.lr,
    warmupSteps: Math.min(o.warmupSteps, o.maxSteps),
    totalSteps: o.maxSteps,
    seed: o.seed,
  });
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
    callbacks: [summary, new ModelCheckpoint({ dirpath: ckptDir, everyNTrainSteps: o.everyNSteps, saveTopK: 1, saveLast: true })],
  });
  const params = new GPT(o.config, { seed: 0 }).numParameters();
  console.log(`Fulgur GPT demo: ${o.config} (${params.toLocaleString("en-US")} parameters), ${data.tokens.length.toLocaleString("en-US")} bytes from ${data.files.length} files, batch ${batchSize}x${cfg.seqLen}`);
  if (ckptPath) console.log(`resuming from ${ckptPath}`);
  await trainer.fit(module, loader, null, { ckptPath });
  if (!trainer.isGlobalZero) return;
  console.log(
    `done: ${trainer.globalStep} steps on ${trainer.strategy?.rootDevice}; loss ${summary.first.toFixed(3)} -> ${summary.last.toFixed(3)}` +
      ` (ln 256 = ${Math.log(256).toFixed(3)}); checkpoint: ${join(ckptDir, "last.safetensors")}`,
  );
}

main().catch((err: unknown) => {
  console.error(`error: ${(err as Error).message}`);
  if (process.env.FULGUR_DEBUG) console.error(err);
  process.exit(1);
});
