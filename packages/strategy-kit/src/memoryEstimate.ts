/**
 * Memory estimates from a model built on the `meta` device: parameters are counted by their
 * shapes and dtypes, nothing is allocated. The replicated layout (single device, DDP) is here;
 * sharded strategies divide the parts they shard by the world size and add gathered units.
 */
import type { MemoryBreakdown, MemoryEstimate, MemoryEstimateInput } from "@fulgur/core";
import { itemsize } from "@fulgur/tensor";

export interface ModelBytes {
  /** Bytes of every parameter and buffer as stored. */
  readonly parameters: number;
  /** Bytes of the trainable parameters (their gradients have the same size). */
  readonly trainable: number;
  /** Trainable elements (optimizer state is per element). */
  readonly trainableElements: number;
}

export function modelBytes(input: MemoryEstimateInput): ModelBytes {
  let parameters = 0;
  let trainable = 0;
  let trainableElements = 0;
  for (const p of input.module.parameters()) {
    const bytes = p.numel * itemsize(p.dtype);
    parameters += bytes;
    if (p.requiresGrad) {
      trainable += bytes;
      trainableElements += p.numel;
    }
  }
  for (const b of input.module.buffers()) parameters += b.numel * itemsize(b.dtype);
  return { parameters, trainable, trainableElements };
}

export function breakdown(parts: Omit<MemoryBreakdown, "total">): MemoryBreakdown {
  const total =
    parts.parameters + parts.gradients + parts.optimizerState + parts.gatheredUnits + parts.communication + parts.activations + parts.workspace;
  return Object.freeze({ ...parts, total });
}

export const EMPTY_BREAKDOWN: MemoryBreakdown = breakdown({
  parameters: 0,
  gradients: 0,
  optimizerState: 0,
  gatheredUnits: 0,
  communication: 0,
  activations: 0,
  workspace: 0,
});

/** Whole model, gradients and optimizer state on every device (single device, DDP). */
export function estimateReplicatedMemory(
  strategy: string,
  input: MemoryEstimateInput,
  extra: { readonly communicationBytes: number },
): MemoryEstimate {
  const m = modelBytes(input);
  const notes: string[] = [];
  const optimizerBytes = input.optimizerBytesPerParameter ?? 8;
  // Autocast keeps a 16-bit copy of each trained weight between steps.
  const mixed = input.precision === "bf16-mixed" || input.precision === "16-mixed" || input.precision === "bf16" || input.precision === "16";
  const castCopies = mixed ? m.trainableElements * 2 : 0;
  if (mixed) notes.push("workspace: autocast's 16-bit copies of the trained weights");
  let activations = 0;
  if (input.activationBytesPerSample !== undefined) activations = input.activationBytesPerSample * input.microBatch;
  else notes.push("activations not estimated (no activationBytesPerSample given)");
  return {
    strategy,
    perDevice: breakdown({
      parameters: m.parameters,
      gradients: m.trainable,
      optimizerState: m.trainableElements * optimizerBytes,
      gatheredUnits: 0,
      communication: extra.communicationBytes,
      activations,
      workspace: castCopies,
    }),
    perHost: EMPTY_BREAKDOWN,
    disk: 0,
    notes,
  };
}
