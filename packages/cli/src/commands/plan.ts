/**
 * `fulgur plan`: will it fit? The memory plan of @fulgur/trainer (issue 15) for a GPT configuration
 * built on `meta` (nothing is allocated, so a 70B plan runs on a laptop): per strategy, whether it
 * fits, the peak per GPU, host and disk per node, and the biggest micro-batch that fits, for this
 * machine or one described by flags.
 */
import { Command, InvalidArgumentError, Option } from "commander";
import { GPT, GPT_CONFIGS, type GPTConfig } from "@fulgur/nn";
import { withDevice } from "@fulgur/tensor";
import {
  PRECISION_ALIASES,
  type PlanCandidate,
  chooseStrategy,
  defaultCandidates,
  describeMachine,
  parseBytes,
  planMemory,
  renderPlan,
  resolveAccelerator,
} from "@fulgur/trainer";
import type { CliContext } from "../context";
import { invalidOption } from "../errors";
import { oneOf, pluginName, positiveInt } from "../parsers";

interface PlanFlags {
  config: string;
  size?: { dModel: number; nLayers: number; nHeads: number; seqLen: number; microBatch?: number };
  devices: number;
  nodes: number;
  gpuMemory?: number;
  hostMemory?: number;
  diskSpace?: number;
  precision: string;
  microBatch?: number;
  accumulate: number;
  strategy?: string[];
  json?: boolean;
}

/** `--size 4096,32,32,1024[,1]`: width, layers, heads, sequence length and optionally the micro-batch (the anchor's `d L H T B`). */
function gptSize(value: string): NonNullable<PlanFlags["size"]> {
  const parts = value.split(",").map((p) => p.trim());
  const n = parts.map(Number);
  if ((parts.length !== 4 && parts.length !== 5) || !n.every((v, i) => /^\d+$/.test(parts[i]) && Number.isSafeInteger(v) && v > 0)) {
    throw new InvalidArgumentError("expected four or five positive integers d,L,H,T[,B] (model width, layers, heads, sequence length, micro-batch)");
  }
  const [dModel, nLayers, nHeads, seqLen, microBatch] = n;
  if (dModel % nHeads !== 0) throw new InvalidArgumentError(`expected heads (${nHeads}) dividing the width (${dModel})`);
  return { dModel, nLayers, nHeads, seqLen, microBatch };
}

function bytesFlag(value: string): number {
  try {
    return parseBytes("size", value);
  } catch {
    throw new InvalidArgumentError('expected a positive size such as "80GiB", "512GB" or "1TiB" (units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)');
  }
}

export async function runPlan(ctx: CliContext, flags: PlanFlags): Promise<void> {
  const named = (GPT_CONFIGS as Record<string, GPTConfig & { microBatch?: number }>)[flags.config];
  if (!named) throw invalidOption("--config <name>", flags.config, `expected one of ${Object.keys(GPT_CONFIGS).join(", ")} (a named GPT configuration; other sizes with --size d,L,H,T[,B])`);
  const { microBatch: sizeBatch, ...size } = flags.size ?? {};
  const config: GPTConfig = { ...named, ...size };
  const microBatch = flags.microBatch ?? sizeBatch ?? named.microBatch ?? 1;
  // The accelerator is asked only for what was not described (a GPU's memory).
  const accelerator = flags.gpuMemory === undefined ? await resolveAccelerator("auto") : null;
  const machine = describeMachine({ devicesPerNode: flags.devices, nodes: flags.nodes }, { gpuMemory: flags.gpuMemory, hostMemory: flags.hostMemory, diskSpace: flags.diskSpace }, accelerator);
  const module = withDevice("meta", () => new GPT(config));
  const worldSize = flags.devices * flags.nodes;
  const candidates: PlanCandidate[] = flags.strategy ? flags.strategy.map((strategy) => ({ strategy })) : defaultCandidates(worldSize);
  const plan = await planMemory({ module, machine, precision: flags.precision, microBatch, accumulateGradBatches: flags.accumulate, candidates });
  let auto: ReturnType<typeof chooseStrategy> | null = null;
  try {
    if (!flags.strategy) auto = chooseStrategy(plan);
  } catch {
    // No strategy of the rule could be estimated (their packages are not installed): the table says why.
  }
  if (flags.json) {
    const rows = plan.rows.map(({ estimate, ...r }) => ({ ...r, perDevice: estimate?.perDevice ?? null, perHost: estimate?.perHost ?? null, peak: estimate?.peak ?? null, notes: estimate?.notes ?? [] }));
    ctx.io.out(JSON.stringify({ ...plan, config, rows, auto }) + "\n");
    return;
  }
  ctx.io.out(renderPlan(plan) + (auto ? `\n${auto.reason}\n` : ""));
}

export function planCommand(ctx: CliContext): Command {
  return new Command("plan")
    .description("will it fit? each strategy's memory per GPU, host and disk for a GPT configuration, on this machine or a described one")
    .addOption(new Option("--config <name>", "a named GPT configuration").default("1b"))
    .addOption(new Option("--size <d,L,H,T[,B]>", "model width, layers, heads, sequence length and micro-batch, as the anchor's `d L H T B` (vocabulary from --config)").argParser(gptSize))
    .addOption(new Option("--devices <n>", "GPUs per node").argParser(positiveInt("GPUs per node")).default(1))
    .addOption(new Option("--nodes <n>", "nodes").argParser(positiveInt("nodes")).default(1))
    .addOption(new Option("--gpu-memory <size>", "memory of one GPU (default: this machine's first GPU)").argParser(bytesFlag))
    .addOption(new Option("--host-memory <size>", "host memory of one node (default: this machine's, os.totalmem())").argParser(bytesFlag))
    .addOption(new Option("--disk-space <size>", "free space on one node's drive for NVMe offload (default: not described; NVMe offload is then shown but never fits)").argParser(bytesFlag))
    .addOption(new Option("--precision <p>", "training precision").argParser(oneOf(Object.keys(PRECISION_ALIASES), "a precision")).default("bf16-mixed"))
    .addOption(new Option("--micro-batch <n>", "samples per GPU per forward (default: the configuration's)").argParser(positiveInt("samples per micro-batch")))
    .addOption(new Option("--accumulate <n>", "micro-batches per optimizer step").argParser(positiveInt("micro-batches per step")).default(1))
    .addOption(
      new Option("--strategy <name>", "plan only this strategy (repeatable; default: the strategies of the auto rule and their neighbours)").argParser(
        (v: string, prev: string[] | undefined) => [...(prev ?? []), pluginName("strategy")(v)],
      ),
    )
    .option("--json", "machine-readable output")
    .addHelpText(
      "after",
      `
Headroom: a strategy fits when its peak is at most 90% of a GPU's memory and the node's ranks hold at
most 90% of its host memory (the rest is for the CUDA context, workspaces, allocator fragmentation
and the runtime).

Examples:
  $ fulgur plan --config 1b --devices 8
  $ fulgur plan --config 1b --devices 8 --gpu-memory 80GiB --host-memory 512GiB --nodes 2
  $ fulgur plan --size 8192,86,64,1024,1 --devices 8 --gpu-memory 80GiB --host-memory 1TiB --disk-space 8TB
  $ fulgur plan --size 4096,32,32,1024,1 --devices 8 --gpu-memory 80GiB --json`,
    )
    .action(async (opts: PlanFlags) => runPlan(ctx, opts));
}
