/**
 * The options of the sharding engine, as frozen policy objects (FSDP2's `MixedPrecisionPolicy`,
 * `CPUOffloadPolicy`): validated by the strategy facades, read here.
 */
import type { DType } from "@fulgur/tensor";
import type { UnitGroups } from "./flatUnit";
import type { NvmeSettings } from "./nvme/nvmeTier";

/**
 * - FULL_SHARD: parameters, gradients and optimizer state sharded; a unit's gathered parameters
 *   are freed after its forward and gathered again for its backward.
 * - SHARD_GRAD_OP: the same, but gathered parameters stay from forward until backward.
 * - NO_SHARD: every rank holds everything; gradients are all-reduced (DDP, through the engine).
 * - HYBRID_SHARD: FULL_SHARD within a shard group (a node), replicated across groups.
 */
export type ShardingStrategy = "FULL_SHARD" | "SHARD_GRAD_OP" | "NO_SHARD" | "HYBRID_SHARD";

export interface MixedPrecisionPolicy {
  /** dtype of the gathered copy the unit computes with; null: the master dtype. */
  readonly paramDtype: DType | null;
  /** dtype gradients are reduced in; null: paramDtype (or the master dtype). */
  readonly reduceDtype: DType | null;
}

export const FULL_PRECISION: MixedPrecisionPolicy = Object.freeze({ paramDtype: null, reduceDtype: null });

export interface EngineOptions {
  readonly shardingStrategy: ShardingStrategy;
  readonly mixedPrecision: MixedPrecisionPolicy;
  /** Units gathered ahead of the one computing, in forward and in backward (0: no prefetch). */
  readonly prefetch: number;
  /** Free gathered parameters after forward (true for FULL_SHARD and HYBRID_SHARD). */
  readonly reshardAfterForward: boolean;
  /** Keep slices, gradients and optimizer state in host memory; units go up to the device to compute. */
  readonly offload: boolean;
  /**
   * Keep every unit gathered from step to step, gathered again right after each optimizer step
   * (ZeRO stages 1 and 2: parameters replicated, gradients and optimizer state sharded). False:
   * units are freed after backward (FSDP, ZeRO stage 3).
   */
  readonly keepGathered?: boolean;
  /** Offload to disk (needs `offload`): what goes to files under `path`, and how they are read and written. */
  readonly nvme?: NvmeOffload | null;
  /**
   * With `offload`: the units that keep state on the device anyway, by module path ("" for the
   * root unit); null or absent: every unit offloaded. See [Note: units kept on the device].
   * Without offload only `parameters` acts: those units stay gathered from step to step (ZeRO's
   * persistent units).
   */
  readonly keep?: OffloadKeep | null;
  /**
   * With `offload` to a GPU's host: about the share (0 to 1) of the host-resident optimizer step
   * updated on the device, by whole units whose gradient slices stay there and whose state is
   * streamed up and back in pieces ([Note: the step streamed through the device] and [Note:
   * gradients beside the streamed step] in deviceStep.ts). Absent or 0: the CPU's threads update all of it.
   */
  readonly deviceStepShare?: number;
  /**
   * With `offload`: when an optimizer step follows a backward, each offloaded unit in host memory
   * is updated by the CPU's threads as soon as its gradients are in, beside the rest of backward
   * ([Note: the step beside backward] in stepBesideBackward.ts). Needs a fused Adam or AdamW
   * (`attachOptimizer`), and no clipping or loss scaling.
   */
  readonly stepBesideBackward?: boolean;
}

/**
 * [Note: units kept on the device] Offload moves a unit's master slice, gradient slice and
 * optimizer state to the host as one piece (the step updates the slice where its state is), so a
 * unit keeps either all three on the device or none (DeepSpeed's `offload_optimizer.ratio`, by
 * whole units). Separately, a unit may keep its gathered parameters on the device from step to
 * step: gathered once after each optimizer step (one upload of its slice) instead of before each
 * forward and backward. A unit alone on its rank (one shard) whose slice stays on the device is
 * resident: its parameters are the slice itself and nothing is gathered at all.
 */
export interface OffloadKeep {
  /** Units whose master slice, gradient slice and optimizer state stay on the device. */
  readonly optimizerState: readonly string[];
  /** Units whose gathered parameters stay on the device between steps (not re-uploaded for each forward and backward). */
  readonly parameters: readonly string[];
  /**
   * With NVMe offload: offloaded units whose master slice and optimizer state stay in host memory
   * instead of going to disk ([Note: three tiers]). Absent or empty: every offloaded unit's go to disk.
   */
  readonly host?: readonly string[];
}

/**
 * What of `keep` acts in a run: all of it with offload; without, only the units whose gathered
 * parameters stay from step to step (ZeRO's persistent units), or null when none do.
 */
export function keepThatActs(offload: boolean, keep: OffloadKeep | null): OffloadKeep | null {
  if (offload) return keep;
  return keep && keep.parameters.length > 0 ? Object.freeze({ optimizerState: [], parameters: keep.parameters }) : null;
}

/**
 * [Note: three tiers] A model too big for the GPU and the host together is placed over GPU, host
 * and disk by whole units: the units kept on the device (`optimizerState`) hold everything there;
 * of the offloaded ones, those in `host` keep their slices and optimizer state in (pinned) host
 * memory, and the rest keep them on disk between steps, read in piece by piece for the optimizer
 * step. Every offloaded unit's gradient slice is in host memory (the download lands there). A
 * unit on the host is stepped with its piece like the others, with no disk I/O.
 */

/**
 * One unit's own settings, in place of the engine's (FSDP2 takes `reshard_after_forward` and
 * `mp_policy` per `fully_shard` call): e.g. the last block kept gathered from its forward to its
 * backward, which comes right after, or one unit reduced in fp32. Where a unit's slices live is
 * not among them: the engine's `offload` and `keep` place every unit ([Note: units kept on the
 * device]), which is how FSDP's per-unit `cpuOffload` reaches the engine.
 */
export interface UnitOptions {
  readonly reshardAfterForward?: boolean;
  readonly mixedPrecision?: MixedPrecisionPolicy;
  /** The unit's groups, e.g. with its own post-forward group (an integer `reshardAfterForward`) or none. */
  readonly groups?: UnitGroups;
}

/**
 * The disk tier (ZeRO-Infinity's "nvme" device) over the host offload: optimizer state, and with
 * `parameters` the sharded units' master slices, live in files between their uses.
 */
export interface NvmeOffload extends NvmeSettings {
  readonly optimizerState: boolean;
  readonly parameters: boolean;
  /**
   * Elements of master slices stepped together (DeepSpeed's sub_group_size): the step reads the
   * state of one piece of whole units while the piece before it is updated. At least one unit.
   */
  readonly subGroupSize: number;
}

/** Units whose reduced gradients may be on their way to the host at once (offload to a GPU's host). */
export const DOWNLOADS_IN_FLIGHT = 2;
