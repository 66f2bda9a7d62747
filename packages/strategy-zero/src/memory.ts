/**
 * What a ZeRO stage holds per device and per host (DESIGN.md decision 13's memory estimate), as
 * the engine lays it out (stages.ts, [Note: stages on the engine]): stage 0 replicates everything;
 * stages 1 and 2 keep a gathered copy of every unit beside this rank's master slice, gradient
 * slice and optimizer state; stage 3 keeps only the slices and the units being computed. Offload
 * moves the slices, gradient slices and optimizer state to the host.
 */
import type { MemoryEstimate, MemoryEstimateInput } from "@fulgur/core";
import { EMPTY_BREAKDOWN, breakdown, estimateReplicatedMemory, modelBytes } from "@fulgur/strategy-kit";
import type { WrapPolicy } from "./api";
import type { ZeroPlan } from "./config";
import { offloaded } from "./stages";
import { unitPaths } from "./wrapPolicy";

export function estimateZeroMemory(strategyName: string, plan: ZeroPlan, input: MemoryEstimateInput, layout: { worldSize: number; prefetch: number; policy: WrapPolicy | null }): MemoryEstimate {
  const { worldSize, prefetch } = layout;
  if (plan.stage === 0 && !offloaded(plan)) return estimateReplicatedMemory(strategyName, input, { communicationBytes: 0 });
  const shards = plan.stage === 0 ? 1 : worldSize;
  const m = modelBytes(input);
  const units = Math.max(1, unitPaths(input.module, layout.policy).length);
  const unitBytes = m.parameters / units;
  const sliced = {
    parameters: m.parameters / shards,
    gradients: m.trainable / shards,
    optimizerState: (m.trainableElements * (input.optimizerBytesPerParameter ?? 8)) / shards,
  };
  const onHost = offloaded(plan);
  // Kept gathered (stages 1, 2): every unit whole plus one unit's gradient buffer in backward.
  // Stage 3: the computing unit and the prefetched ones, each with a gradient buffer in backward.
  const gathered = plan.stage === 3 ? unitBytes * (1 + prefetch) * 2 : plan.stage === 0 ? m.parameters : m.parameters + unitBytes;
  const activations = (input.activationBytesPerSample ?? 0) * input.microBatch;
  const device = onHost ? { parameters: 0, gradients: 0, optimizerState: 0 } : sliced;
  return {
    strategy: strategyName,
    perDevice: breakdown({ ...device, gatheredUnits: shards === 1 && !onHost ? 0 : gathered, communication: 0, activations, workspace: 0 }),
    perHost: onHost ? breakdown({ ...sliced, gatheredUnits: 0, communication: 0, activations: 0, workspace: 0 }) : EMPTY_BREAKDOWN,
    disk: 0,
    notes: [
      `ZeRO stage ${plan.stage} over ${shards} shard(s)${onHost ? "; slices, gradient slices and optimizer state in host memory" : ""}`,
      plan.stage === 3 ? `gathered: the computing unit and ${prefetch} prefetched, each with its gradient buffer` : "gathered: every unit, kept from step to step",
    ],
  };
}
