/**
 * What a ZeRO stage holds per device and per host (DESIGN.md decision 13's memory estimate), as
 * the engine lays it out (stages.ts, [Note: stages on the engine]): stage 0 replicates everything;
 * stages 1 and 2 keep a gathered copy of every unit beside this rank's master slice, gradient
 * slice and optimizer state; stage 3 keeps only the slices and the units being computed. Offload
 * moves the slices, gradient slices and optimizer state to the host, but for the units kept on the
 * device (offload_optimizer.ratio, offloadKeep: placement.ts); NVMe offload puts the optimizer
 * state or the parameter slices on disk.
 */
import type { MemoryEstimate, MemoryEstimateInput } from "@fulgur/core";
import { type OffloadKeep, estimateShardedMemory } from "@fulgur/sharding";
import { breakdown, estimateReplicatedMemory, modelBytes } from "@fulgur/strategy-kit";
import type { WrapPolicy } from "./api";
import type { ZeroPlan } from "./config";
import { offloaded } from "./stages";
import { unitPaths } from "./wrapPolicy";

export function estimateZeroMemory(
  strategyName: string,
  plan: ZeroPlan,
  input: MemoryEstimateInput,
  layout: { worldSize: number; prefetch: number; policy: WrapPolicy | null; keep?: OffloadKeep | null },
): MemoryEstimate {
  const { worldSize, prefetch } = layout;
  if (plan.stage === 0 && !offloaded(plan)) return estimateReplicatedMemory(strategyName, input, { communicationBytes: 0 });
  const shards = plan.stage === 0 ? 1 : worldSize;
  const onHost = offloaded(plan);
  const units = unitPaths(input.module, layout.policy);
  const estimate = estimateShardedMemory(strategyName, input, {
    shards,
    units,
    prefetch: plan.stage === 3 ? prefetch : 0,
    reshardAfterForward: true,
    keepGathered: plan.stage === 1 || plan.stage === 2,
    offload: onHost,
    keep: layout.keep ?? null,
    alone: worldSize === 1,
    checkpointed: [],
    notes: [
      `ZeRO stage ${plan.stage} over ${shards} shard(s)${onHost ? "; slices, gradient slices and optimizer state in host memory" : ""}`,
      plan.stage === 3 ? `gathered: the computing unit and ${prefetch} prefetched, each with its gradient buffer` : "gathered: every unit, kept from step to step",
    ],
  });
  // Units kept on the device or in host memory ([Note: three tiers]) keep their slices and state out of the files.
  const keep = layout.keep ?? null;
  const m = subtract(subtract(modelBytes(input), bytesOfUnits(input, units, keep?.optimizerState ?? [])), bytesOfUnits(input, units, keep?.host ?? []));
  const optimizerOnDisk = plan.offloadOptimizer === "nvme" ? (m.trainableElements * (input.optimizerBytesPerParameter ?? 8)) / shards : 0;
  const paramsOnDisk = plan.offloadParam === "nvme" ? m.parameters / shards : 0;
  if (optimizerOnDisk + paramsOnDisk === 0) return estimate;
  // What of it the host still holds (src/nvme in @fulgur/sharding): the optimizer step runs in
  // sub_group_size pieces of whole units, the next read in while one is updated; a parameter slice
  // on disk is read in for its unit's gather, the next unit's beside it.
  const unitSizes = units.map((u) => modelBytes(input, [u]));
  const largestElements = Math.max(0, ...unitSizes.map((b) => b.trainableElements)) / shards;
  const largestParams = Math.max(0, ...unitSizes.map((b) => b.parameters)) / shards;
  const pieceElements = Math.max(largestElements, Math.min(plan.nvme?.subGroupSize ?? 1e9, m.trainableElements / shards));
  const stateInMemory = optimizerOnDisk > 0 ? Math.min(optimizerOnDisk, 2 * pieceElements * (input.optimizerBytesPerParameter ?? 8)) : 0;
  const paramsInMemory = paramsOnDisk > 0 ? Math.min(paramsOnDisk, 2 * largestParams) : 0;
  const host = estimate.perHost;
  const perHost = breakdown({
    parameters: host.parameters - paramsOnDisk + paramsInMemory,
    gradients: host.gradients,
    optimizerState: host.optimizerState - optimizerOnDisk + stateInMemory,
    gatheredUnits: host.gatheredUnits,
    communication: host.communication,
    activations: host.activations,
    workspace: host.workspace,
  });
  return {
    ...estimate,
    perHost,
    disk: optimizerOnDisk + paramsOnDisk,
    ...(plan.nvmePath === null ? {} : { diskPath: plan.nvmePath }),
    notes: [
      ...estimate.notes,
      "disk: the NVMe offload's swap files (optimizer state, and at stage 3 the parameter slices); the host holds two sub_group_size pieces of the state and two units' slices while they are used",
    ],
  };
}

type Bytes = ReturnType<typeof modelBytes>;

const NONE: Bytes = { parameters: 0, trainable: 0, trainableElements: 0 };
const add = (a: Bytes, b: Bytes): Bytes => ({ parameters: a.parameters + b.parameters, trainable: a.trainable + b.trainable, trainableElements: a.trainableElements + b.trainableElements });
const subtract = (a: Bytes, b: Bytes): Bytes => ({ parameters: a.parameters - b.parameters, trainable: a.trainable - b.trainable, trainableElements: a.trainableElements - b.trainableElements });

/** The bytes of the given units ("" is the root unit: what no wrapped unit holds). */
function bytesOfUnits(input: MemoryEstimateInput, units: readonly string[], paths: readonly string[]): Bytes {
  const wrapped = paths.filter((u) => u !== "");
  const kept = wrapped.length > 0 ? modelBytes(input, wrapped) : NONE;
  if (!paths.includes("")) return kept;
  return add(kept, subtract(modelBytes(input), units.length > 0 ? modelBytes(input, units) : NONE));
}
