/**
 * `strategy: "auto"` checked against the memory plan (issue 15; the rule of
 * docs/guide/choosing-a-strategy.md). On several devices: DDP when the whole training state and a
 * micro-batch's activations fit one GPU with headroom (fastest: no gathers), else FSDP full shard
 * (parameters, gradients and optimizer state divided over the ranks), else FSDP, then ZeRO-3, with
 * the slices and the optimizer state in host memory, then ZeRO-3 with them on disk (NVMe offload,
 * when the machine's disk is described and holds them). On one device: `single_device` when it
 * fits, else the same offloads. When nothing fits the first offload is picked anyway, and said so: the
 * Trainer's pre-flight check then refuses it unless told to try.
 */
import { type MemoryPlan, type PlanRow, formatBytes } from "./memoryPlan";

export const AUTO_ORDER_MULTI = ["ddp", "fsdp", "fsdp_cpu_offload", "deepspeed_stage_3_offload", "deepspeed_stage_3_offload_nvme"] as const;
export const AUTO_ORDER_SINGLE = ["single_device", "fsdp_cpu_offload", "deepspeed_stage_3_offload", "deepspeed_stage_3_offload_nvme"] as const;

export interface AutoChoice {
  readonly strategy: string;
  readonly fits: boolean;
  /** One line: what was picked and why, with the figures. */
  readonly reason: string;
}

function needs(r: PlanRow): string {
  const host = r.hostBytesPerNode > 0 ? ` and ${formatBytes(r.hostBytesPerNode)} host per node` : "";
  const disk = r.diskBytesPerNode > 0 ? ` and ${formatBytes(r.diskBytesPerNode)} disk per node` : "";
  return `${r.strategy} needs ${formatBytes(r.perDeviceBytes)} per GPU${host}${disk}`;
}

/** Picks a strategy from the plan's rows by the rule above. */
export function chooseStrategy(plan: MemoryPlan): AutoChoice {
  const order = plan.worldSize > 1 ? AUTO_ORDER_MULTI : AUTO_ORDER_SINGLE;
  const rows = order.map((name) => plan.rows.find((r) => r.strategy === name && r.error === undefined)).filter((r): r is PlanRow => r !== undefined);
  if (rows.length === 0) {
    const why = order.map((name) => `${name}: ${plan.rows.find((r) => r.strategy === name)?.error ?? "not in the plan"}`).join("; ");
    throw new Error(`strategy "auto": no strategy of the rule could be estimated (${why})`);
  }
  const m = plan.machine;
  const budget = `${formatBytes(plan.usableGpuBytes)} usable of ${formatBytes(m.gpuMemoryBytes)} per GPU, ${formatBytes(plan.usableHostBytes)} of ${formatBytes(m.hostMemoryBytes)} host`;
  const skipped: string[] = [];
  for (const r of rows) {
    if (r.fits) {
      const before = skipped.length > 0 ? `${skipped.join("; ")}; ` : "";
      return {
        strategy: r.strategy,
        fits: true,
        reason: `strategy "auto" picked ${r.strategy} for ${plan.worldSize} device(s), micro-batch ${plan.microBatch}: ${before}${needs(r)}, which fits (${budget})`,
      };
    }
    skipped.push(`${needs(r)} (${r.problems.join("; ")})`);
  }
  // The rule's last branch: offload, the first of the rule's offloads even though it does not fit.
  const last = rows.find((r) => r.strategy.includes("offload")) ?? rows[rows.length - 1];
  return {
    strategy: last.strategy,
    fits: false,
    reason: `strategy "auto" picked ${last.strategy} for ${plan.worldSize} device(s), micro-batch ${plan.microBatch}, but nothing fits: ${skipped.join("; ")} (${budget})`,
  };
}
