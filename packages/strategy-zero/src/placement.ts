/**
 * Which units keep state on the device when offload is on ([Note: units kept on the device] in
 * @fulgur/sharding): from DeepSpeed's `offload_optimizer.ratio`, or from the device memory left
 * after the estimate of what training needs there anyway (the `offloadKeep` option).
 *
 * [Note: the ratio by whole units] DeepSpeed offloads its sub-groups in order while the offloaded
 * elements stay within ratio × all elements, and keeps the rest on the GPU. Here a unit's slice
 * and its optimizer state move together, so the same rule runs over units in the engine's order
 * (the wrapped units as registered, the root unit last): a unit is offloaded when, with it, the
 * offloaded elements stay at most ratio × all; otherwise it stays on the device. The offloaded
 * share therefore rounds down to whole units (ratio 1: all, ratio 0: none). A unit whose optimizer
 * state stays has its parameter slice on the device too (the step updates it in place); its
 * parameters are still gathered for each forward and backward (from the device: no upload), as
 * DeepSpeed's are.
 *
 * [Note: keeping what fits] With a budget of device bytes beyond what training needs there anyway,
 * units are kept from the last one back (the end the ratio keeps): first their gathered parameters
 * (each saves an upload before every forward and backward, for one copy of the unit held all the
 * step), then, among those, their slices and optimizer state (saving the gradient download, the
 * CPU step and the upload after it). Each unit is taken when it fits in what is left, skipped when
 * not. A unit alone on its rank whose slice moves to the device becomes resident: its kept copy is
 * no longer needed, and that memory counts back. The optimizer state is counted as AdamW's in fp32
 * (8 bytes an element): the optimizer is not made yet when the units are placed.
 */
import { freemem } from "node:os";
import { type Accelerator, reportsDeviceMemory } from "@fulgur/core";
import { type OffloadKeep, type UnitPlacement, stepBesideBackwardRefusal } from "@fulgur/sharding";
import { type DType, itemsize } from "@fulgur/tensor";
import { DeepSpeedOptionError, type ZeroStage } from "./api";
import type { ZeroPlan } from "./config";
import { offloaded } from "./stages";

/** A unit's size, for placing it. */
export interface UnitSize {
  /** Its module path ("" for the root unit). */
  readonly path: string;
  /** Parameter elements (the whole unit, not this rank's slice). */
  readonly numel: number;
}

/** The units whose optimizer state (and slice) stays on the device for `ratio` ([Note: the ratio by whole units]). */
export function keepForRatio(units: readonly UnitSize[], ratio: number): OffloadKeep {
  const total = units.reduce((n, u) => n + u.numel, 0);
  const limit = ratio * total;
  let offloaded = 0;
  const kept: string[] = [];
  for (const u of units) {
    if (offloaded + u.numel <= limit) offloaded += u.numel;
    else kept.push(u.path);
  }
  // DeepSpeed's ratio moves optimizer state only: parameters are gathered for each use as before
  // (from a slice on the device, without an upload, for the units kept there).
  return Object.freeze({ optimizerState: Object.freeze(kept), parameters: Object.freeze([]) });
}

/** What a unit costs on the device when kept, per element of the whole unit. */
export interface KeepCosts {
  /** Ranks each unit is sharded over. */
  readonly shards: number;
  /** Whether the gathered parameters stay on the device anyway (ZeRO stages 1 and 2). */
  readonly gatheredAnyway: boolean;
  /** Bytes per element of the master slice and of the gradient slice (fp32: 4). */
  readonly masterBytes: number;
  /** Bytes per element of the optimizer state (AdamW in fp32: 8). */
  readonly optimizerBytes: number;
  /** Bytes per element of a kept gathered copy: the gathered buffer and its autocast copies. */
  readonly gatheredBytes: number;
}

/** The units kept on the device within `budget` bytes ([Note: keeping what fits]). */
export function keepWithinBudget(units: readonly UnitSize[], budget: number, costs: KeepCosts): OffloadKeep {
  let left = Math.max(0, budget);
  const fromLast = [...units].reverse();
  // The root unit (and at stages 1 and 2 every unit) is gathered all step anyway: its copy costs nothing more.
  const alreadyGathered = (u: UnitSize): boolean => costs.gatheredAnyway || u.path === "";
  const copyBytes = (u: UnitSize): number => u.numel * costs.gatheredBytes;
  const parameters: string[] = [];
  for (const u of fromLast) {
    const cost = alreadyGathered(u) ? 0 : copyBytes(u);
    if (cost > left) continue;
    left -= cost;
    parameters.push(u.path);
  }
  const optimizerState: string[] = [];
  for (const u of fromLast) {
    if (!parameters.includes(u.path)) continue;
    const slice = Math.ceil(u.numel / costs.shards);
    // Alone on its rank the unit becomes resident: its gathered buffer goes (its autocast copies stay).
    const refund = costs.shards === 1 ? u.numel * costs.masterBytes : 0;
    const cost = slice * (2 * costs.masterBytes + costs.optimizerBytes) - refund;
    if (cost > left) continue;
    left -= cost;
    optimizerState.push(u.path);
  }
  return Object.freeze({ optimizerState: Object.freeze(optimizerState), parameters: Object.freeze(parameters) });
}

/** What keeping a unit in host memory instead of on disk costs there, per element of its slice. */
export interface HostKeepCosts {
  /** Ranks each unit is sharded over. */
  readonly shards: number;
  /** Bytes per element that NVMe offload would put on disk: the optimizer state's, and the master slice's with parameter offload. */
  readonly bytesPerElement: number;
}

/**
 * Of the offloaded units (not kept on the device), those whose slices and state stay in host
 * memory within `budget` bytes ([Note: three tiers] in @fulgur/sharding): taken from the last unit
 * back, as the device keeps them, each when it fits in what is left; the first ones go to disk.
 */
export function keepInHost(units: readonly UnitSize[], onDevice: readonly string[], budget: number, costs: HostKeepCosts): readonly string[] {
  let left = Math.max(0, budget);
  const host: string[] = [];
  for (const u of [...units].reverse()) {
    if (onDevice.includes(u.path)) continue;
    const cost = Math.ceil(u.numel / costs.shards) * costs.bytesPerElement;
    if (cost > left) continue;
    left -= cost;
    host.push(u.path);
  }
  return Object.freeze(host);
}

/** Of the host's available memory "auto" reads, the share left for the rest of the machine (the OS, the page cache the disk tier goes through, the process's own heap). */
export const HOST_MEMORY_HEADROOM = 0.1;

/** The host memory "auto" lets one rank use: the available memory less the headroom, shared by this node's ranks. */
export function freeHostBytes(): number {
  const local = Number(process.env.LOCAL_WORLD_SIZE ?? "1");
  return Math.floor((freemem() * (1 - HOST_MEMORY_HEADROOM)) / (Number.isInteger(local) && local > 0 ? local : 1));
}

/** Refuses an offloadKeepHost that cannot act: nothing goes to disk in this run. */
export function checkOffloadKeepHost(plan: ZeroPlan, keep: "auto" | number | null, strategyName: string): void {
  if (keep === null || plan.offloadOptimizer === "nvme" || plan.offloadParam === "nvme") return;
  throw new DeepSpeedOptionError(
    "offloadKeepHost",
    `${strategyName} option offloadKeepHost: got ${JSON.stringify(keep)}; it keeps in host memory what NVMe offload would put on disk, but nothing goes to disk in this run ` +
      `(offload_optimizer.device "${plan.offloadOptimizer}", offload_param.device "${plan.offloadParam}"); offload to NVMe (offloadOptimizerDevice: "nvme") or leave offloadKeepHost out`,
  );
}

/**
 * The share of the offloaded optimizer step updated on the device ([Note: the step streamed
 * through the device] in @fulgur/sharding): the option's number, none when absent or with nothing
 * offloaded. Off by default until a GPU measurement picks the share that pays on a given host.
 */
export function deviceStepShareFor(plan: ZeroPlan, option: number | null): number {
  return offloaded(plan) ? option ?? 0 : 0;
}

/** Refuses an offloadStepShare that cannot act: nothing is offloaded, so the step already runs on the device. */
export function checkOffloadStepShare(plan: ZeroPlan, share: number | null, strategyName: string): void {
  if (share === null || share === 0 || offloaded(plan)) return;
  throw new DeepSpeedOptionError(
    "offloadStepShare",
    `${strategyName} option offloadStepShare: got ${share}; it streams offloaded optimizer state through the device, but nothing is offloaded in this run (stage ${plan.stage}, ` +
      `offload_optimizer.device "${plan.offloadOptimizer}", offload_param.device "${plan.offloadParam}"); turn offload on (offloadOptimizer: true) or leave offloadStepShare out`,
  );
}

/**
 * Refuses an offloadStepInBackward that cannot act or would change the numbers: nothing offloaded
 * (no CPU step to move), or a clip by norm (config or Trainer) or fp16 loss scaling, whose factor
 * needs every gradient before any unit is updated. `trainerClip`: the Trainer's gradientClipVal.
 */
export function offloadStepInBackwardProblem(plan: ZeroPlan, precision: string | null, trainerClip: number | undefined, strategyName: string): DeepSpeedOptionError | null {
  const configClip = (plan.gradientClipping ?? 0) > 0;
  const message = stepBesideBackwardRefusal(strategyName, {
    notOffloaded: offloaded(plan)
      ? null
      : { why: `nothing is offloaded in this run (stage ${plan.stage}, offload_optimizer.device "${plan.offloadOptimizer}", offload_param.device "${plan.offloadParam}")`, instead: "Turn offload on (offloadOptimizer: true)" },
    clip: configClip
      ? { by: `gradient_clipping is ${plan.gradientClipping} in ${plan.source}`, instead: "Set gradient_clipping to 0" }
      : trainerClip !== undefined && trainerClip > 0
        ? { by: `the Trainer clips gradients (gradientClipVal ${trainerClip})`, instead: "Drop gradientClipVal" }
        : null,
    lossScaling: plan.fp16Enabled === true || (precision !== null && precision.startsWith("16")) ? `fp16 (precision ${JSON.stringify(precision ?? "16-mixed")})` : null,
  });
  return message === null ? null : new DeepSpeedOptionError("offloadStepInBackward", message);
}

/** The start-up line: how many units keep their parameters and their optimizer state on the device. */
export function describePlacement(placement: readonly UnitPlacement[]): string {
  const m = placement.length;
  const params = placement.filter((u) => u.parameters === "device").length;
  const state = placement.filter((u) => u.optimizerState === "device").length;
  const elsewhere = [...new Set(placement.flatMap((u) => [u.parameters, u.optimizerState]).filter((t) => t !== "device"))];
  const rest = elsewhere.length === 0 ? "nothing offloaded" : `the rest on ${elsewhere.join(" and ")}`;
  // Three tiers ([Note: three tiers] in @fulgur/sharding): how many units' state stays in host memory rather than on disk.
  const inHost = placement.filter((u) => u.optimizerState === "host").length;
  const threeTiers = inHost > 0 && placement.some((u) => u.optimizerState === "nvme");
  const hostPart = threeTiers ? `, ${inHost} of ${m} units' optimizer state in host memory` : "";
  return `${params} of ${m} units' parameters on the device, ${state} of ${m} units' optimizer state on the device${hostPart}, ${rest}`;
}

/**
 * Refuses an offloadKeep that cannot act: nothing offloaded, or a ratio below 1 that already
 * chooses what stays on the device.
 */
export function checkOffloadKeep(plan: ZeroPlan, keep: "auto" | number | null, strategyName: string): void {
  if (keep === null) return;
  const got = `${strategyName} option offloadKeep: got ${JSON.stringify(keep)}`;
  if (!offloaded(plan)) {
    throw new DeepSpeedOptionError(
      "offloadKeep",
      `${got}; it keeps on the device what offload would move off it, but nothing is offloaded in this run (stage ${plan.stage}, ` +
        `offload_optimizer.device "${plan.offloadOptimizer}", offload_param.device "${plan.offloadParam}"); turn offload on (offloadOptimizer: true) or leave offloadKeep out`,
    );
  }
  if (plan.offloadRatio < 1) {
    throw new DeepSpeedOptionError(
      "offloadKeep",
      `${got}, and zero_optimization.offload_optimizer.ratio is ${plan.offloadRatio} in ${plan.source}; both choose what stays on the device: keep one of them (offloadKeep chooses by the memory left)`,
    );
  }
}

/** Of the free device memory "auto" reads, the share left unused: the allocator's pool rounding and fragmentation, which no estimate sees. */
export const FREE_MEMORY_HEADROOM = 0.05;

/** The device memory "auto" may use: the accelerator's free memory less the headroom. */
export function freeDeviceBytes(strategyName: string, accelerator: Accelerator, device: string): number {
  if (!reportsDeviceMemory(accelerator)) {
    throw new DeepSpeedOptionError(
      "offloadKeep",
      `${strategyName} option offloadKeep: got "auto", but the accelerator "${accelerator.name}" does not report its devices' free memory (deviceMemory); pass the bytes of device memory the run may use instead`,
    );
  }
  return Math.floor(accelerator.deviceMemory(device).free * (1 - FREE_MEMORY_HEADROOM));
}

/** The units kept within `bytesLeft`, with the costs of the engine's layout for this run. */
export function keepWithinDevice(
  units: readonly UnitSize[],
  bytesLeft: number,
  run: { readonly stage: ZeroStage; readonly shards: number; readonly masterDtype: DType; readonly precision: string },
): OffloadKeep {
  const master = itemsize(run.masterDtype);
  // Under autocast a kept unit's low-precision copies of its weights stay with it (bf16 or fp16).
  const casts = run.precision === "bf16-mixed" || run.precision === "16-mixed" ? 2 : 0;
  return keepWithinBudget(units, bytesLeft, {
    shards: run.shards,
    gatheredAnyway: run.stage === 1 || run.stage === 2,
    masterBytes: master,
    optimizerBytes: 8,
    gatheredBytes: master + casts,
  });
}
