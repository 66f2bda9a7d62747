/**
 * `fulgur bench`: prints one JSON line. Without --config, the CPU matmul micro-benchmark; with
 * --config, a GPT training step timed as the PyTorch anchor times it, in the anchor's format, so
 * `npm run bench -- --config 1b --devices 1` sits beside `python3 gpt_torch.py single`.
 *
 * Several devices: this process starts one rank per device (through @fulgur/distributed's
 * launcher) and each rank runs the Trainer with the strategy by name. Rank 0 hands its result
 * back through a file, so stdout carries exactly one JSON line while the ranks' own output goes to
 * stderr.
 */
import { existsSync, readFileSync, rmSync } from "node:fs";
import { appendFile, mkdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes } from "node:crypto";
import { Command, InvalidArgumentError, Option } from "commander";
import { writeFileAtomic } from "@fulgur/checkpoint-io";
import { runsBatch } from "@fulgur/core";
import { launch } from "@fulgur/distributed";
import { GPT_CONFIGS, type GPTConfigName } from "@fulgur/nn";
import { PRECISION_ALIASES, resolveAccelerator, resolveStrategy } from "@fulgur/trainer";
import { type GptBenchOptions, type GptBenchSize, gptTrainingBench } from "../bench/gpt";
import { cpuMatmulBench } from "../bench/matmul";
import type { CliContext } from "../context";
import { invalidOption } from "../errors";
import { writableOf } from "../io";
import { jsonObject, nonEmpty, nonNegativeInt, oneOf, pluginName, positiveInt } from "../parsers";

const CONFIGS = Object.keys(GPT_CONFIGS) as GPTConfigName[];
const ACCELERATORS = ["auto", "cpu", "cuda"] as const;
/** Where rank 0 of a launched benchmark leaves its result for the launching process. */
const RESULT_ENV = "FULGUR_BENCH_RESULT";

interface BenchFlags {
  config?: GPTConfigName;
  strategy?: string;
  devices?: number;
  steps?: number;
  warmup?: number;
  precision?: string;
  accelerator?: (typeof ACCELERATORS)[number];
  strategyOptions?: Record<string, unknown>;
  microBatches?: number;
  size?: GptBenchSize;
  out?: string;
}

/** Flags that only mean something for the GPT benchmark, with their spelling for messages. */
const GPT_ONLY: [keyof BenchFlags, string][] = [
  ["strategy", "--strategy <name>"],
  ["devices", "--devices <n>"],
  ["steps", "--steps <n>"],
  ["warmup", "--warmup <n>"],
  ["precision", "--precision <p>"],
  ["accelerator", "--accelerator <name>"],
  ["strategyOptions", "--strategy-options <json>"],
  ["microBatches", "--micro-batches <m>"],
  ["size", "--size <d,L,H,T,B>"],
];

/** The CLI entry this code runs from, for starting ranks: dist/bin.js when built, src/bin.ts under tests. */
function binPath(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  for (const rel of ["bin.js", "../bin.js", "bin.ts", "../bin.ts"]) {
    const p = join(here, rel);
    if (existsSync(p)) return p;
  }
  throw new Error(`bench: cannot find the fulgur entry (bin.js) near ${here} to start the ranks with`);
}

async function writeLine(ctx: CliContext, line: string, out: string | undefined): Promise<void> {
  ctx.io.out(line + "\n");
  if (out) {
    await mkdir(dirname(out), { recursive: true });
    await appendFile(out, line + "\n");
  }
}

/** `--size 4096,32,32,1024,1`: five positive integers, the heads dividing the width. */
function gptSize(value: string): GptBenchSize {
  const parts = value.split(",").map((p) => p.trim());
  const n = parts.map(Number);
  if (parts.length !== 5 || !n.every((v, i) => /^\d+$/.test(parts[i]) && Number.isSafeInteger(v) && v > 0)) {
    throw new InvalidArgumentError("expected five positive integers d,L,H,T,B (model width, layers, heads, sequence length, micro-batch)");
  }
  const [dModel, nLayers, nHeads, seqLen, microBatch] = n;
  if (dModel % nHeads !== 0) throw new InvalidArgumentError(`expected heads (${nHeads}) dividing the width (${dModel})`);
  return { dModel, nLayers, nHeads, seqLen, microBatch };
}

/** Checks the flags and settles the defaults that depend on the machine (accelerator, precision, strategy). */
export async function resolveGptBench(flags: BenchFlags): Promise<GptBenchOptions> {
  const devices = flags.devices ?? 1;
  const strategy = flags.strategy ?? (devices > 1 ? "ddp" : "single_device");
  if (strategy === "single_device" && devices > 1) {
    throw invalidOption("--devices <n>", String(devices), "expected 1 with --strategy single_device (pick a distributed strategy such as ddp for several devices)");
  }
  const accelerator = await resolveAccelerator(flags.accelerator ?? "auto");
  const strategyOptions = flags.strategyOptions ?? {};
  const microBatches = flags.microBatches ?? 1;
  // The strategy's own validation names a bad option here, before any rank starts.
  const { strategy: resolved } = await resolveStrategy(strategy, strategyOptions, devices);
  if (microBatches > 1 && !runsBatch(resolved)) {
    throw invalidOption("--micro-batches <m>", String(microBatches), `applies to strategies that run the whole batch (pipeline, pipeline_gpipe); ${strategy} does not`);
  }
  return {
    config: flags.config!,
    strategy,
    devices,
    steps: flags.steps ?? 10,
    warmup: flags.warmup ?? 3,
    // The anchor trains in bf16 autocast on GPUs; the CPU backend's reference path is float32.
    precision: flags.precision ?? (accelerator.name === "cpu" ? "32-true" : "bf16-mixed"),
    accelerator: accelerator.name,
    strategyOptions,
    microBatches,
    size: flags.size ?? null,
  };
}

/** Starts one rank per device and returns rank 0's JSON line. */
async function launchRanks(o: GptBenchOptions, ctx: CliContext): Promise<string> {
  const resultFile = join(tmpdir(), `fulgur-bench-${process.pid}-${randomBytes(4).toString("hex")}.json`);
  const args = ["bench", "--config", o.config, "--strategy", o.strategy, "--devices", String(o.devices), "--steps", String(o.steps),
    "--warmup", String(o.warmup), "--precision", o.precision, "--accelerator", o.accelerator,
    "--strategy-options", JSON.stringify(o.strategyOptions), "--micro-batches", String(o.microBatches),
    ...(o.size ? ["--size", [o.size.dModel, o.size.nLayers, o.size.nHeads, o.size.seqLen, o.size.microBatch].join(",")] : [])];
  try {
    const result = await launch({
      nprocPerNode: o.devices,
      script: binPath(),
      args,
      env: { ...process.env, [RESULT_ENV]: resultFile },
      stdout: writableOf(ctx.io.err),
      stderr: writableOf(ctx.io.err),
    });
    if (result.exitCode !== 0) throw new Error(`bench: ${result.message ?? `the ranks exited with code ${result.exitCode}`}`);
    if (!existsSync(resultFile)) throw new Error("bench: the ranks finished but rank 0 reported no result");
    return readFileSync(resultFile, "utf8").trim();
  } finally {
    rmSync(resultFile, { force: true });
  }
}

export function benchCommand(ctx: CliContext): Command {
  return new Command("bench")
    .description("benchmark: the CPU matmul, or with --config a GPT training step in the PyTorch anchor's JSON format")
    .addOption(new Option("--config <name>", "GPT configuration to train").argParser(oneOf(CONFIGS, "a named GPT configuration")))
    .addOption(new Option("--strategy <name>", "strategy by name (default: single_device, or ddp with --devices > 1)").argParser(pluginName("strategy")))
    .addOption(new Option("--devices <n>", "devices (ranks) on this node (default 1)").argParser(positiveInt("devices on this node")))
    .addOption(new Option("--steps <n>", "timed steps (default 10)").argParser(positiveInt("timed steps")))
    .addOption(new Option("--warmup <n>", "untimed steps first (default 3)").argParser(nonNegativeInt("untimed warm-up steps")))
    .addOption(new Option("--precision <p>", "precision (default bf16-mixed on CUDA, 32-true on CPU)").argParser(oneOf(Object.keys(PRECISION_ALIASES))))
    .addOption(new Option("--accelerator <name>", "where to run (default auto: CUDA when usable, else CPU)").argParser(oneOf(ACCELERATORS)))
    .addOption(new Option("--strategy-options <json>", "options for the strategy, a JSON object (as the Trainer's strategyOptions)").argParser(jsonObject("strategy options")))
    .addOption(
      new Option("--micro-batches <m>", "a step's batch is m micro-batches of the config's (the anchor's PP_MICRO); for strategies that run the whole batch").argParser(
        positiveInt("micro-batches a step"),
      ),
    )
    .addOption(
      new Option("--size <d,L,H,T,B>", "model width, layers, heads, sequence and micro-batch, as the anchor's `d L H T B` (vocabulary from --config)").argParser(gptSize),
    )
    .addOption(new Option("--out <file>", "also append the JSON line to this file (directories are created)").argParser(nonEmpty("a file path")))
    .addHelpText(
      "after",
      `
Output (one line): {"framework":"fulgur","strategy":..,"devices":..,"params":..,"d":..,"L":..,"T":..,"B":..,
  "step_ms":..,"tok_s_gpu":..,"tflops_gpu":..,"peak_gib":..,"loss":..}; tflops counts 6*N*tokens + 12*L*d*T*tokens
  per step and per device, as the anchor does.

Examples:
  $ fulgur bench                                      # CPU matmul 512x512x512
  $ fulgur bench --config tiny --steps 5 --warmup 1   # on the CPU when no GPU is usable
  $ npm run bench -- --config 1b --devices 1 --out results/bench.jsonl
  $ fulgur bench --config 1b --devices 8 --strategy ddp
  $ fulgur bench --config 1b --devices 2 --strategy fsdp --strategy-options '{"activationCheckpointingPolicy":["Block"]}'
  $ fulgur bench --config 1b --devices 1 --strategy pipeline --micro-batches 8   # beside PP_MICRO=8 ... pp_1f1b
  $ fulgur bench --config 1b --size 4096,32,32,1024,1 --strategy deepspeed_stage_3_offload   # beside ... fsdp_offload 4096 32 32 1024 1`,
    )
    .action(async (flags: BenchFlags) => {
      if (!flags.config) {
        const stray = GPT_ONLY.find(([k]) => flags[k] !== undefined);
        if (stray) {
          throw invalidOption(stray[1], String(flags[stray[0]]), `applies to the GPT benchmark only; add --config ${CONFIGS.join("|")}`);
        }
        await writeLine(ctx, JSON.stringify(cpuMatmulBench()), flags.out);
        return;
      }
      const o = await resolveGptBench(flags);
      const inRank = process.env.RANK !== undefined;
      if (o.devices > 1 && !inRank) {
        await writeLine(ctx, await launchRanks(o, ctx), flags.out);
        return;
      }
      const result = await gptTrainingBench(o);
      if (!result) return;
      const line = JSON.stringify(result);
      const handBack = process.env[RESULT_ENV];
      if (handBack) await writeFileAtomic(handBack, async (write) => write(Buffer.from(line + "\n")));
      else await writeLine(ctx, line, flags.out);
    });
}
