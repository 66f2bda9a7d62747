/**
 * What a ZeRO stage holds per device and per host (DESIGN.md decision 13's memory estimate), as
 * the engine lays it out (stages.ts, [Note: stages on the engine]): stage 0 replicates everything;
 * stages 1 and 2 keep a gathered copy of every unit beside this rank's master slice, gradient
 * slice and optimizer state; stage 3 keeps only the slices and the units being computed. Offload
 * moves the slices, gradient slices and optimizer state to the host, but for the units kept on the
 * device (offload_optimizer.ratio, offloadKeep: placement.ts); NVMe offload puts the optimizer
 * state, and at stage 3 the parameter slices, on disk (@fulgur/sharding's offloadHostMemory.ts).
 */
import type { MemoryEstimate, MemoryEstimateInput } from "@fulgur/core";
import { type OffloadKeep, estimateShardedMemory, planUnits } from "@fulgur/sharding";
import { estimateReplicatedMemory } from "@fulgur/strategy-kit";
import type { WrapPolicy } from "./api";
import type { ZeroPlan } from "./config";
import { offloaded, persistentUnits, unitsKeptToBackward, withPersistentUnits } from "./stages";
import type { DType } from "@fulgur/tensor";
import { unitPaths } from "./wrapPolicy";

export function estimateZeroMemory(
  strategyName: string,
  plan: ZeroPlan,
  input: MemoryEstimateInput,
  layout: { worldSize: number; prefetch: number; policy: WrapPolicy | null; keep?: OffloadKeep | null; deviceStepShare?: number; paramDtype?: DType | null },
): MemoryEstimate {
  const { worldSize, prefetch } = layout;
  if (plan.stage === 0 && !offloaded(plan)) return estimateReplicatedMemory(strategyName, input, { communicationBytes: 0 });
  const shards = plan.stage === 0 ? 1 : worldSize;
  const onHost = offloaded(plan);
  const units = unitPaths(input.module, layout.policy);
  // Offloaded parameters bring their optimizer state with them (stages.ts, nvmeOffloadOf).
  const parametersOnDisk = plan.stage === 3 && plan.offloadParam === "nvme";
  const nvme = onHost && (plan.offloadOptimizer === "nvme" || parametersOnDisk) ? { optimizerState: true, parameters: parametersOnDisk, subGroupSize: Math.max(1, plan.nvme?.subGroupSize ?? 1e9) } : null;
  // [Note: units kept from forward to backward] in stages.ts (stage3_max_reuse_distance).
  const wrapped = planUnits(input.module, units).filter((u) => u.path !== "").map((u) => ({ path: u.path, numel: u.params.reduce((n, p) => n + p.tensor.numel, 0) }));
  const keptToBackward = unitsKeptToBackward(plan, wrapped, prefetch);
  // [Note: persistent units] in stages.ts (stage3_param_persistence_threshold).
  const persistent = persistentUnits(plan, wrapped);
  const estimate = estimateShardedMemory(strategyName, input, {
    shards,
    units,
    prefetch: plan.stage === 3 ? prefetch : 0,
    reshardAfterForward: true,
    unitReshardAfterForward: new Map(keptToBackward.map((u) => [u, false])),
    keepGathered: plan.stage === 1 || plan.stage === 2,
    offload: onHost,
    keep: withPersistentUnits(layout.keep ?? null, persistent),
    deviceStepShare: layout.deviceStepShare ?? 0,
    // Offloaded units that gather in a narrower dtype keep a host copy in it and upload that, one unit ahead.
    uploadsAhead: onHost && layout.paramDtype != null && layout.paramDtype !== "float32",
    computeDtypes: layout.paramDtype ? new Map([...units, ""].map((u) => [u, layout.paramDtype!])) : undefined,
    nvme,
    alone: worldSize === 1,
    checkpointed: [],
    notes: [
      `ZeRO stage ${plan.stage} over ${shards} shard(s)${onHost ? "; slices, gradient slices and optimizer state in host memory" : ""}`,
      plan.stage === 3 ? `gathered: the computing unit and ${prefetch} prefetched, each with its gradient buffer` : "gathered: every unit, kept from step to step",
      ...(persistent.length > 0 ? [`kept gathered from step to step: ${persistent.length} unit(s) (stage3_param_persistence_threshold)`] : []),
      ...(keptToBackward.length > 0 ? [`kept gathered from forward to backward: ${keptToBackward.length} unit(s) (stage3_max_reuse_distance)`] : []),
    ],
  });
  return estimate.disk > 0 && plan.nvmePath !== null ? { ...estimate, diskPath: plan.nvmePath } : estimate;
}
