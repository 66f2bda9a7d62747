/** Command-line options of the GPT demo, checked before anything is read or trained. */
import { Command, InvalidArgumentError } from "commander";
import { GPT_CONFIGS } from "@fulgur/nn";

export interface DemoOptions {
  config: keyof typeof GPT_CONFIGS;
  data: string[];
  maxSteps: number;
  batchSize?: number;
  lr: number;
  warmupSteps: number;
  accelerator: string;
  devices: number;
  strategy: string;
  precision: string;
  out: string;
  resume: boolean;
  ckptPath?: string;
  overwrite: boolean;
  everyNSteps: number;
  logEveryNSteps: number;
  seed: number;
  progressBar: boolean;
}

function int(name: string, min: number): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}, got ${JSON.stringify(v)}`);
    return n;
  };
}

function positive(name: string): (v: string) => number {
  return (v) => {
    const n = Number(v);
    if (!(n > 0) || !Number.isFinite(n)) throw new InvalidArgumentError(`${name} must be a positive number, got ${JSON.stringify(v)}`);
    return n;
  };
}

export function demoCommand(defaultData: string[]): Command {
  return new Command("fulgur-gpt-demo")
    .description("Train the reference GPT on text files, byte-level (vocabulary 256).")
    .option("--config <name>", `model size: ${Object.keys(GPT_CONFIGS).join(", ")}`, (v) => {
      if (!Object.hasOwn(GPT_CONFIGS, v)) throw new InvalidArgumentError(`must be one of ${Object.keys(GPT_CONFIGS).join(", ")}`);
      return v;
    }, "small")
    .option("--data <paths...>", "text files or directories to train on (default: this repository's docs and sources)", defaultData)
    .option("--max-steps <n>", "optimizer steps", int("--max-steps", 1), 60)
    .option("--batch-size <n>", "micro-batch (default: the configuration's)", int("--batch-size", 1))
    .option("--lr <x>", "peak learning rate of AdamW", positive("--lr"), 3e-3)
    .option("--warmup-steps <n>", "linear warmup before the cosine decay", int("--warmup-steps", 0), 5)
    .option("--accelerator <name>", "auto (CUDA when a GPU is there), cpu or cuda", "auto")
    .option("--devices <n>", "devices (processes) to train on", int("--devices", 1), 1)
    .option("--strategy <name>", "strategy name (auto, single_device, ddp, ...)", "auto")
    .option("--precision <p>", "32-true, bf16-mixed, 16-mixed, bf16-true", "32-true")
    .option("--out <dir>", "where logs and checkpoints go", "runs/gpt")
    .option("--resume", "continue from <out>/checkpoints/last.safetensors", false)
    .option("--ckpt-path <file>", "continue from this checkpoint")
    .option("--overwrite", "start over even where <out>/checkpoints holds a later step's checkpoint (replaces it)", false)
    .option("--every-n-steps <n>", "save a checkpoint every n steps", int("--every-n-steps", 1), 20)
    .option("--log-every-n-steps <n>", "read and print the loss every n steps", int("--log-every-n-steps", 1), 5)
    .option("--seed <n>", "seed of the weights and the data order", int("--seed", 0), 0)
    .option("--no-progress-bar", "plain lines instead of a progress bar");
}

export function readOptions(cmd: Command): DemoOptions {
  const o = cmd.opts();
  return { ...o, progressBar: o.progressBar !== false } as DemoOptions;
}
