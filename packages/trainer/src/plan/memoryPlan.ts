/**
 * The pre-flight memory plan (issue 15): for a model built on `meta` (nothing allocated) and a
 * machine, each candidate strategy's estimate (its `estimateMemory` ability, DESIGN.md decision
 * 13), whether it fits, and the biggest micro-batch that does. Strategies are created through the
 * registry by name, so the Trainer never imports a strategy package (the package order of
 * DESIGN.md); a strategy whose package is not installed shows as a row with the reason.
 *
 * [Note: headroom] A plan fits when the estimate is at most 90% of a GPU's memory and the node's
 * ranks together hold at most 90% of the host's. The estimates count tensors only: the CUDA
 * context (about 0.5 GiB), cuBLASLt's workspace, NCCL's buffers and the caching allocator's
 * fragmentation are outside them on the GPU, and the operating system, each rank's Node.js
 * runtime and the data loader on the host. 10% of an 80 GiB GPU is 8 GiB, which covers them on
 * the H200 runs measured so far; a plan that fits only without it is reported as not fitting.
 */
import { statfsSync } from "node:fs";
import { type MemoryEstimate, StrategyRegistry, estimatesMemory } from "@fulgur/core";
import type { Module } from "@fulgur/nn";
import { loadStrategyPackage } from "../plugins";
import type { Machine } from "./machine";

/** Fraction of GPU memory and of host memory left outside the plan ([Note: headroom]). */
export const PLAN_HEADROOM = 0.1;

/** The largest micro-batch the search tries. */
const MAX_MICRO_BATCH = 1 << 16;

export interface PlanCandidate {
  /** A registered strategy name. */
  readonly strategy: string;
  readonly options?: Readonly<Record<string, unknown>>;
}

/**
 * The strategies a plan compares: those of the rule in docs/guide/choosing-a-strategy.md and their
 * neighbours. Not the pipeline: its micro-batch is a share of a batch the stages pass along, not
 * a data-parallel rank's, so its figures do not sit in the same column (ask for it by name).
 */
export function defaultCandidates(worldSize: number): PlanCandidate[] {
  const names =
    worldSize > 1
      ? ["ddp", "fsdp", "fsdp_shard_grad_op", "deepspeed_stage_2", "deepspeed_stage_3", "fsdp_cpu_offload", "deepspeed_stage_3_offload", "deepspeed_stage_3_offload_nvme"]
      : ["single_device", "fsdp_cpu_offload", "deepspeed_stage_3_offload", "deepspeed_stage_3_offload_nvme"];
  return names.map((strategy) => ({ strategy }));
}

export interface PlanInput {
  /** The model, built on the `meta` device. */
  readonly module: Module;
  readonly machine: Machine;
  readonly precision: string;
  readonly microBatch: number;
  readonly accumulateGradBatches?: number;
  readonly seqLen?: number;
  readonly candidates?: readonly PlanCandidate[];
}

export interface PlanRow {
  readonly strategy: string;
  readonly options: Readonly<Record<string, unknown>>;
  readonly fits: boolean;
  /** Bytes one GPU holds at the step's peak. */
  readonly perDeviceBytes: number;
  /** Bytes the node's host memory holds (every rank of the node). */
  readonly hostBytesPerNode: number;
  /** Bytes on the node's disk (NVMe offload). */
  readonly diskBytesPerNode: number;
  /** The biggest micro-batch that fits (0: not even 1). */
  readonly maxMicroBatch: number;
  /** What does not fit, one phrase each ("GPU 93.1 GiB > 72.0 GiB usable"); empty when it fits. */
  readonly problems: readonly string[];
  readonly estimate: MemoryEstimate | null;
  /** Why there is no estimate (the package is missing, the strategy does not estimate, it refused the input). */
  readonly error?: string;
}

export interface MemoryPlan {
  readonly machine: Machine;
  readonly precision: string;
  readonly microBatch: number;
  readonly accumulateGradBatches: number;
  readonly worldSize: number;
  readonly parameters: number;
  /** Bytes of one GPU the plan may use, and of one node's host memory ([Note: headroom]). */
  readonly usableGpuBytes: number;
  readonly usableHostBytes: number;
  /** Bytes of one node's disk the plan may use for NVMe offload, or null when no disk was described. */
  readonly usableDiskBytes: number | null;
  readonly rows: readonly PlanRow[];
}

/** "1.2 GiB", "340.0 MiB": binary units, one decimal unless `decimals` says how many for a value. */
export function formatBytes(bytes: number, decimals: (value: number) => number = () => 1): string {
  if (!Number.isFinite(bytes)) return String(bytes);
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = bytes;
  let u = 0;
  while (Math.abs(v) >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v} B` : `${v.toFixed(decimals(v))} ${units[u]}`;
}

type Estimator = (microBatch: number) => MemoryEstimate;

/**
 * Free bytes of the filesystem holding a path, for an unprivileged writer, or null when the path
 * is not here: read once per path (a plan weighs many micro-batches against the same directory).
 */
type FreeDiskBytes = (path: string) => number | null;

function freeDiskReader(): FreeDiskBytes {
  const read = new Map<string, number | null>();
  return (path) => {
    if (!read.has(path)) {
      try {
        const s = statfsSync(path);
        read.set(path, Number(s.bavail) * Number(s.bsize));
      } catch {
        read.set(path, null);
      }
    }
    return read.get(path)!;
  };
}

function problemsOf(e: MemoryEstimate, plan: Pick<MemoryPlan, "usableGpuBytes" | "usableHostBytes" | "usableDiskBytes" | "machine">, freeDiskBytes: FreeDiskBytes): string[] {
  const out: string[] = [];
  if (e.perDevice.total > plan.usableGpuBytes) out.push(`GPU ${formatBytes(e.perDevice.total)} > ${formatBytes(plan.usableGpuBytes)} usable`);
  const host = e.perHost.total * plan.machine.devicesPerNode;
  if (host > plan.usableHostBytes) out.push(`host ${formatBytes(host)} > ${formatBytes(plan.usableHostBytes)} usable`);
  const disk = e.disk * plan.machine.devicesPerNode;
  if (disk === 0) return out;
  if (plan.usableDiskBytes !== null) {
    if (disk > plan.usableDiskBytes) out.push(`disk ${formatBytes(disk)} > ${formatBytes(plan.usableDiskBytes)} usable`);
    return out;
  }
  // No disk described: the free space of the directory the strategy writes to, when it is here.
  const free = e.diskPath === undefined ? null : freeDiskBytes(e.diskPath);
  if (free === null) {
    out.push(`disk ${formatBytes(disk)} per node, and no disk was described (--disk-space)`);
    return out;
  }
  const usable = Math.floor(free * (1 - PLAN_HEADROOM));
  if (disk > usable) out.push(`disk ${formatBytes(disk)} > ${formatBytes(usable)} usable of ${formatBytes(free)} free under ${e.diskPath}`);
  return out;
}

/** The biggest micro-batch whose estimate fits: doubling, then bisecting (estimates grow with the micro-batch). */
function largestFitting(estimate: Estimator, fits: (e: MemoryEstimate) => boolean): number {
  if (!fits(estimate(1))) return 0;
  let good = 1;
  let bad = 2;
  while (bad <= MAX_MICRO_BATCH && fits(estimate(bad))) {
    good = bad;
    bad *= 2;
  }
  if (bad > MAX_MICRO_BATCH) return good;
  while (bad - good > 1) {
    const mid = Math.floor((good + bad) / 2);
    if (fits(estimate(mid))) good = mid;
    else bad = mid;
  }
  return good;
}

/**
 * The biggest fitting micro-batch among those the strategy takes: a pipeline splits its batch into
 * equal micro-batches, so only multiples of the smallest batch it accepts are searched (found by
 * trying 1, 2, ... up to the batch the plan is for, which the strategy did take).
 */
function largestFittingMultiple(estimate: Estimator, taken: number, fits: (e: MemoryEstimate) => boolean): number {
  let step = 1;
  for (; step < taken; step++) {
    try {
      estimate(step);
      break;
    } catch {
      // Not a batch this strategy can run: the next.
    }
  }
  return step * largestFitting((k) => estimate(k * step), fits);
}

export async function planMemory(input: PlanInput): Promise<MemoryPlan> {
  const { machine } = input;
  const worldSize = machine.devicesPerNode * machine.nodes;
  const accumulateGradBatches = input.accumulateGradBatches ?? 1;
  const base = {
    machine,
    precision: input.precision,
    microBatch: input.microBatch,
    accumulateGradBatches,
    worldSize,
    parameters: input.module.parameters().reduce((n, p) => n + p.numel, 0),
    usableGpuBytes: Math.floor(machine.gpuMemoryBytes * (1 - PLAN_HEADROOM)),
    usableHostBytes: Math.floor(machine.hostMemoryBytes * (1 - PLAN_HEADROOM)),
    usableDiskBytes: machine.diskBytes === undefined ? null : Math.floor(machine.diskBytes * (1 - PLAN_HEADROOM)),
  };
  const rows: PlanRow[] = [];
  const freeDisk = freeDiskReader();
  for (const c of input.candidates ?? defaultCandidates(worldSize)) {
    const options = c.options ?? {};
    const empty = { strategy: c.strategy, options, fits: false, perDeviceBytes: 0, hostBytesPerNode: 0, diskBytesPerNode: 0, maxMicroBatch: 0, problems: [], estimate: null };
    let estimate: Estimator;
    try {
      await loadStrategyPackage(c.strategy);
      const strategy = StrategyRegistry.create(c.strategy, { ...options });
      if (!estimatesMemory(strategy)) {
        rows.push({ ...empty, error: "the strategy does not estimate its memory (no estimateMemory)" });
        continue;
      }
      estimate = (microBatch) =>
        strategy.estimateMemory({ module: input.module, precision: input.precision, microBatch, accumulateGradBatches, seqLen: input.seqLen, worldSize, copiesCrossBus: machine.gpu ?? false });
      const e = estimate(input.microBatch);
      const problems = problemsOf(e, base, freeDisk);
      rows.push({
        strategy: c.strategy,
        options,
        fits: problems.length === 0,
        perDeviceBytes: e.perDevice.total,
        hostBytesPerNode: e.perHost.total * machine.devicesPerNode,
        diskBytesPerNode: e.disk * machine.devicesPerNode,
        maxMicroBatch: largestFittingMultiple(estimate, input.microBatch, (x) => problemsOf(x, base, freeDisk).length === 0),
        problems,
        estimate: e,
      });
    } catch (err) {
      rows.push({ ...empty, error: (err as Error).message.split("\n")[0] });
    }
  }
  return Object.freeze({ ...base, rows });
}

/** The plan as a table, with a header saying what it is for and the headroom it keeps. */
export function renderPlan(plan: MemoryPlan): string {
  const m = plan.machine;
  const pct = `${Math.round(PLAN_HEADROOM * 100)}%`;
  const lines = [
    `Memory plan: ${(plan.parameters / 1e9).toFixed(2)}B parameters, ${plan.precision}, micro-batch ${plan.microBatch}` +
      (plan.accumulateGradBatches > 1 ? `, ${plan.accumulateGradBatches} micro-batches per step` : ""),
    `Machine: ${m.nodes} node(s) × ${m.devicesPerNode} GPU(s) of ${formatBytes(m.gpuMemoryBytes)}, ${formatBytes(m.hostMemoryBytes)} host memory${m.diskBytes === undefined ? "" : ` and ${formatBytes(m.diskBytes)} disk`} per node (${m.source})`,
    `Usable: ${formatBytes(plan.usableGpuBytes)} per GPU, ${formatBytes(plan.usableHostBytes)} host${plan.usableDiskBytes === null ? "" : `, ${formatBytes(plan.usableDiskBytes)} disk`} per node (${pct} kept for the CUDA context, workspaces, allocator fragmentation and the runtime)`,
    "",
  ];
  const header = ["STRATEGY", "FITS", "PEAK/GPU", "HOST/NODE", "DISK/NODE", "MAX MICRO-BATCH", "PEAK AT"];
  const body = plan.rows.map((r) =>
    r.error !== undefined
      ? [r.strategy, "?", "-", "-", "-", "-", r.error]
      : [
          r.strategy,
          r.fits ? "yes" : "no",
          formatBytes(r.perDeviceBytes),
          formatBytes(r.hostBytesPerNode),
          formatBytes(r.diskBytesPerNode),
          r.maxMicroBatch === 0 ? "none" : r.maxMicroBatch >= MAX_MICRO_BATCH ? `≥ ${MAX_MICRO_BATCH}` : String(r.maxMicroBatch),
          r.estimate?.peak?.where ?? "",
        ],
  );
  const rows = [header, ...body];
  const widths = header.map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  for (const r of rows) lines.push(`  ${r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join("  ")}`.trimEnd());
  const misfits = plan.rows.filter((r) => r.error === undefined && !r.fits);
  if (misfits.length > 0) {
    lines.push("");
    for (const r of misfits) lines.push(`  ${r.strategy} does not fit: ${r.problems.join("; ")}`);
  }
  return lines.join("\n") + "\n";
}
