/**
 * ZeRO stages on the sharding engine (DESIGN.md decision 15): which engine options and process
 * groups each stage is, how deep stage 3 prefetches, what goes to NVMe, and the checks of the NVMe
 * directory before any rank starts.
 *
 * [Note: stages on the engine]
 * - stage 0 (ZeRO off): NO_SHARD. Every rank holds every unit whole (resident, as single-device
 *   training does); gradients are averaged over the world once per optimizer step.
 * - stages 1 and 2: `keepGathered`. Each unit is gathered once before the first step and again
 *   right after each optimizer step, so parameters are replicated for compute; gradients are
 *   reduce-scattered per unit as soon as its backward ends, and each rank steps the optimizer
 *   over its own slice. The engine keeps only this rank's gradient slice in both stages, so stage
 *   1 here holds what DeepSpeed's stage 2 holds (same numbers, less memory than DeepSpeed's 1).
 * - stage 3: FULL_SHARD, the engine's default. A unit is gathered before its forward (with
 *   prefetch), freed after it, gathered again for its backward and freed once its gradients are
 *   reduce-scattered.
 *
 * [Note: prefetch depth from stage3 keys] DeepSpeed prefetches parameters by element counts
 * (stage3_prefetch_bucket_size) and caps what is gathered at once (stage3_max_live_parameters);
 * the engine gathers whole units, counted ahead of the computing one. So the depth is the number
 * of units whose parameters fit in the prefetch bucket, lowered until the computing unit and the
 * prefetched ones fit in max_live_parameters, measured with the largest unit. Neither key given:
 * one unit ahead (FSDP's default). overlap_comm false: none.
 */
import { accessSync, constants, statSync } from "node:fs";
import type { ProcessGroup } from "@fulgur/core";
import { type EngineOptions, FULL_PRECISION, type NvmeOffload, type OffloadKeep, type UnitGroups, keepThatActs } from "@fulgur/sharding";
import { SoloGroup } from "@fulgur/strategy-kit";
import type { DType } from "@fulgur/tensor";
import type { ZeroStage } from "./api";
import type { ZeroPlan } from "./config";

/** Units gathered ahead when no stage3 key says otherwise. */
export const DEFAULT_PREFETCH = 1;

/** Units gathered ahead of the computing one in stage 3 (see [Note: prefetch depth from stage3 keys]). */
export function prefetchDepth(plan: ZeroPlan, wrappedUnitSizes: readonly number[]): number {
  if (plan.stage !== 3 || plan.overlapComm === false) return 0;
  const largest = Math.max(1, ...wrappedUnitSizes);
  let depth = plan.prefetchBucket === null ? DEFAULT_PREFETCH : Math.floor(plan.prefetchBucket / largest);
  if (plan.maxLiveParameters !== null) depth = Math.min(depth, Math.floor(plan.maxLiveParameters / largest) - 1);
  return Math.max(0, Math.min(depth, wrappedUnitSizes.length - 1));
}

/** DeepSpeed's default stage3_max_live_parameters: the cap on units kept for max_reuse_distance when it is not given. */
export const DEEPSPEED_MAX_LIVE_PARAMETERS = 1e9;

/**
 * [Note: units kept from forward to backward] DeepSpeed does not release a stage 3 parameter that
 * will be used again within stage3_max_reuse_distance parameters, and keeps at most
 * stage3_max_live_parameters resident. Here a unit is the thing gathered and freed, and its next
 * use after its forward is its backward; between the two, the units after it compute forward (and
 * those not kept are gathered again for backward). So from the last unit back, each unit stays
 * gathered from its forward to its backward (its reshardAfterForward false) while the parameters
 * of the units after it are within max_reuse_distance, and the kept units with the prefetched ones
 * stay within max_live_parameters (1e9, DeepSpeed's default, when only the distance is given). The
 * first unit that does not fit ends the run: the ones before it are further from their backward.
 * Without max_reuse_distance every unit is freed after its forward, as FSDP's FULL_SHARD does.
 * `wrapped`: the wrapped units in forward order (registration order before the first step), with
 * their parameter counts.
 */
export function unitsKeptToBackward(plan: ZeroPlan, wrapped: readonly { readonly path: string; readonly numel: number }[], prefetch: number): string[] {
  if (plan.stage !== 3 || plan.maxReuseDistance === null) return [];
  const maxLive = plan.maxLiveParameters ?? DEEPSPEED_MAX_LIVE_PARAMETERS;
  const largest = Math.max(0, ...wrapped.map((u) => u.numel));
  const kept: string[] = [];
  let keptNumel = 0;
  // Parameters gathered between a unit's forward and its backward: every unit after it, once each (they are all kept).
  let between = 0;
  for (let k = wrapped.length - 1; k >= 0; k--) {
    const unit = wrapped[k];
    if (between > plan.maxReuseDistance || keptNumel + unit.numel + prefetch * largest > maxLive) break;
    kept.push(unit.path);
    keptNumel += unit.numel;
    between += unit.numel;
  }
  return kept.reverse();
}

/**
 * [Note: persistent units] DeepSpeed does not partition a stage 3 parameter of fewer elements than
 * stage3_param_persistence_threshold: it stays gathered on every rank, saving the latency of many
 * small gathers. The engine gathers whole units, so here a wrapped unit of fewer parameters than
 * the threshold stays gathered from step to step (gathered again after each optimizer step, as at
 * stages 1 and 2); its slices and optimizer state stay sharded, and offloaded where offload puts
 * them. Without the key (or "auto", which Fulgur does not fill), no unit persists.
 */
export function persistentUnits(plan: ZeroPlan, wrapped: readonly { readonly path: string; readonly numel: number }[]): string[] {
  const threshold = plan.persistenceThreshold;
  if (plan.stage !== 3 || threshold === null) return [];
  return wrapped.filter((u) => u.numel < threshold).map((u) => u.path);
}

/** The units whose gathered parameters stay from step to step: `keep`'s (offload) and the persistent ones, or null when none. */
export function withPersistentUnits(keep: OffloadKeep | null, persistent: readonly string[]): OffloadKeep | null {
  if (persistent.length === 0) return keep;
  const base = keep ?? { optimizerState: [], parameters: [] };
  return Object.freeze({ ...base, parameters: Object.freeze([...new Set([...base.parameters, ...persistent])]) });
}

/**
 * Whether slices, gradients and optimizer state live in host memory (the engine has one switch for
 * all); NVMe offload goes through host memory too.
 */
export function offloaded(plan: ZeroPlan): boolean {
  return plan.offloadOptimizer !== "none" || (plan.stage === 3 && plan.offloadParam !== "none");
}

/** What goes to NVMe, or null: the optimizer state, and at stage 3 the parameter slices. */
export function nvmeOffloadOf(plan: ZeroPlan): NvmeOffload | null {
  const optimizerState = plan.offloadOptimizer === "nvme";
  const parameters = plan.stage === 3 && plan.offloadParam === "nvme";
  if ((!optimizerState && !parameters) || plan.nvme === null || plan.nvmePath === null) return null;
  const t = plan.nvme;
  return Object.freeze({
    path: plan.nvmePath,
    // Offloaded parameters bring their optimizer state with them (as "cpu" does).
    optimizerState: optimizerState || parameters,
    parameters,
    threads: Math.max(1, t.threads),
    bufferCount: Math.max(1, t.bufferCount),
    bufferSize: Math.max(t.blockSize, t.bufferSize),
    blockSize: t.blockSize,
    subGroupSize: Math.max(1, t.subGroupSize),
  });
}

/** The engine options of a stage (see [Note: stages on the engine]). */
export function engineOptionsFor(
  plan: ZeroPlan,
  prefetch: number,
  keep: OffloadKeep | null = null,
  deviceStepShare = 0,
  mixedPrecision: { readonly paramDtype?: DType; readonly reduceDtype?: DType } | null = null,
  stepBesideBackward = false,
): EngineOptions {
  const stage = plan.stage;
  return Object.freeze({
    shardingStrategy: stage === 0 ? "NO_SHARD" : stage === 3 ? "FULL_SHARD" : "SHARD_GRAD_OP",
    // Compute casts are the precision's (autocast), and gathered copies stay in the master dtype,
    // unless the strategy's mixedPrecision says in which dtypes units gather and reduce.
    mixedPrecision: mixedPrecision ? Object.freeze({ paramDtype: mixedPrecision.paramDtype ?? null, reduceDtype: mixedPrecision.reduceDtype ?? null }) : FULL_PRECISION,
    prefetch,
    reshardAfterForward: stage === 3,
    offload: offloaded(plan),
    keepGathered: stage === 1 || stage === 2,
    nvme: nvmeOffloadOf(plan),
    // Without offload only the persistent units' parameters (withPersistentUnits) are kept.
    keep: keepThatActs(offloaded(plan), keep),
    deviceStepShare: offloaded(plan) ? deviceStepShare : 0,
    stepBesideBackward: offloaded(plan) && stepBesideBackward,
  });
}

/** Stage 0 shards over nobody and averages over the world; stages 1 to 3 shard over the world. */
export function unitGroupsFor(stage: ZeroStage, world: ProcessGroup): UnitGroups {
  if (stage !== 0) return { shard: world, replicate: null };
  return { shard: new SoloGroup(world.ranks[world.rank]), replicate: world.size > 1 ? world : null };
}

/** An NVMe directory that cannot hold the swap files. */
export class NvmePathError extends Error {
  override readonly name = "NvmePathError";
}

/**
 * Checks the NVMe directory before any rank starts (launch, then setup on every rank): it must be
 * an existing, writable directory, in which each rank makes its own. Names the key and the value.
 */
export function checkNvmePath(plan: ZeroPlan, strategyName: string): void {
  const keys = [
    plan.offloadOptimizer === "nvme" ? "zero_optimization.offload_optimizer.nvme_path" : null,
    plan.stage === 3 && plan.offloadParam === "nvme" ? "zero_optimization.offload_param.nvme_path" : null,
  ].filter((s): s is string => s !== null);
  if (keys.length === 0) return;
  const field = `${keys.join(" / ")} (option nvmePath)`;
  const path = plan.nvmePath;
  const fail = (why: string): never => {
    throw new NvmePathError(`${strategyName}: ${field}: got ${JSON.stringify(path)} in ${plan.source}, ${why}; expected an existing, writable directory (on a fast local drive) where each rank makes its own directory of swap files`);
  };
  if (path === null) fail("nothing");
  let isDirectory = false;
  try {
    isDirectory = statSync(path!).isDirectory();
  } catch {
    fail("which does not exist");
  }
  if (!isDirectory) fail("which is not a directory");
  try {
    accessSync(path!, constants.W_OK | constants.X_OK);
  } catch {
    fail("which this process cannot write to");
  }
}

/** One line for the log: the stage, the layout and what is offloaded. */
export function describeLayout(plan: ZeroPlan, units: number, wrapped: number, world: number, prefetch: number, keptToBackward = 0, persistent = 0): string {
  const what = ["replicated (ZeRO off)", "optimizer state sharded", "gradients and optimizer state sharded", "parameters, gradients and optimizer state sharded"][plan.stage];
  const parts = [`ZeRO stage ${plan.stage}: ${what} over ${world} rank(s)`, `${units} unit(s) (${wrapped} wrapped)`];
  if (plan.stage === 3) parts.push(`prefetch ${prefetch}`);
  if (persistent > 0) parts.push(`${persistent} unit(s) kept gathered from step to step (stage3_param_persistence_threshold)`);
  if (keptToBackward > 0) parts.push(`${keptToBackward} unit(s) kept gathered from forward to backward (stage3_max_reuse_distance)`);
  const nvme = nvmeOffloadOf(plan);
  if (nvme) parts.push(`${nvme.parameters ? "slices and optimizer state" : "optimizer state"} offloaded to NVMe under ${JSON.stringify(nvme.path)} (through host memory)`);
  else if (offloaded(plan)) parts.push("slices and optimizer state offloaded to host memory");
  return parts.join("; ");
}
