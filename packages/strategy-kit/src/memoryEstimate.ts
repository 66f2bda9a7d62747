/**
 * Memory estimates from a model built on the `meta` device: parameters are counted by their
 * shapes and dtypes, nothing is allocated; activations come from the model's formula
 * (@fulgur/nn's `activationProfile`) and a step is simulated (stepMemory.ts). The replicated
 * layout (single device, DDP) is here; sharded strategies describe their own layout to the same
 * simulation.
 */
import type { MemoryBreakdown, MemoryEstimate, MemoryEstimateInput } from "@fulgur/core";
import { type ActivationProfile, activationProfile, autocastCopyElements } from "@fulgur/nn";
import { type DType, itemsize } from "@fulgur/tensor";
import { PRECISION_ALIASES } from "./precision/precisions";
import { type HeldBytes, type StepLayout, simulateStep } from "./stepMemory";

export interface ModelBytes {
  /** Bytes of every parameter and buffer as stored. */
  readonly parameters: number;
  /** Bytes of the trainable parameters (their gradients have the same size). */
  readonly trainable: number;
  /** Trainable elements (optimizer state is per element). */
  readonly trainableElements: number;
}

/** The dtypes a precision stores floating parameters in and computes products in. */
export function precisionDtypes(precision: string): { readonly storage: DType | null; readonly compute: DType | null } {
  const name = PRECISION_ALIASES[precision];
  if (name === undefined) {
    throw new TypeError(`memory estimate: precision ${JSON.stringify(precision)}; expected one of ${Object.keys(PRECISION_ALIASES).map((k) => JSON.stringify(k)).join(", ")}`);
  }
  if (name === "bf16-true") return { storage: "bfloat16", compute: null };
  if (name === "64-true") return { storage: "float64", compute: null };
  if (name === "bf16-mixed") return { storage: null, compute: "bfloat16" };
  if (name === "16-mixed") return { storage: null, compute: "float16" };
  return { storage: null, compute: null };
}

const isFloat = (dtype: DType): boolean => dtype === "float32" || dtype === "float64" || dtype === "bfloat16" || dtype === "float16";

/** Bytes of the parameters (and buffers) under `prefixes` (all when absent), in the precision's storage dtype. */
export function modelBytes(input: Pick<MemoryEstimateInput, "module" | "precision">, prefixes?: readonly string[]): ModelBytes {
  const storage = precisionDtypes(input.precision).storage;
  const size = (dtype: DType): number => itemsize(storage && isFloat(dtype) ? storage : dtype);
  const under = (name: string): boolean => !prefixes || prefixes.some((p) => p === "" || name === p || name.startsWith(`${p}.`));
  let parameters = 0;
  let trainable = 0;
  let trainableElements = 0;
  for (const [name, p] of input.module.namedParameters()) {
    if (!under(name)) continue;
    const bytes = p.numel * size(p.dtype);
    parameters += bytes;
    if (p.requiresGrad) {
      trainable += bytes;
      trainableElements += p.numel;
    }
  }
  for (const [name, b] of input.module.namedBuffers()) if (under(name)) parameters += b.numel * size(b.dtype);
  return { parameters, trainable, trainableElements };
}

/** Bytes of autocast's low-precision copies of the matrix products' weights under `prefix` (0 without autocast). */
export function autocastCopyBytes(input: Pick<MemoryEstimateInput, "module" | "precision">, prefix = ""): number {
  const compute = precisionDtypes(input.precision).compute;
  return compute ? autocastCopyElements(input.module, prefix) * itemsize(compute) : 0;
}

/**
 * The activation profile: the one given, else the model's formula, else one segment of
 * `activationBytesPerSample`, else null (activations not estimated).
 */
export function resolveActivations(input: MemoryEstimateInput): ActivationProfile | null {
  if (input.activations) return input.activations;
  const formula = activationProfile(input.module, { microBatch: input.microBatch, seqLen: input.seqLen, computeDtype: precisionDtypes(input.precision).compute });
  if (formula) return formula;
  if (input.activationBytesPerSample === undefined) return null;
  const savedBytes = input.activationBytesPerSample * input.microBatch;
  return { segments: [{ name: "model", modules: [""], savedBytes, forwardTransientBytes: 0, backwardTransientBytes: 0 }], source: "activationBytesPerSample" };
}

export function activationNote(profile: ActivationProfile | null): string {
  return profile ? `activations: ${profile.source}` : "activations not estimated (no formula for this model and no activationBytesPerSample given)";
}

/** Trainable bytes under each segment's modules, and those of parameters no segment names. */
export function segmentGradients(input: MemoryEstimateInput, profile: ActivationProfile | null): { readonly perSegment: number[]; readonly other: number } {
  const all = modelBytes(input).trainable;
  const perSegment = (profile?.segments ?? []).map((s) => modelBytes(input, s.modules).trainable);
  return { perSegment, other: Math.max(0, all - perSegment.reduce((a, b) => a + b, 0)) };
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

export function checkEstimateInput(input: MemoryEstimateInput): void {
  const positive = (field: string, v: unknown): void => {
    if (v !== undefined && (!Number.isInteger(v) || (v as number) < 1)) throw new RangeError(`memory estimate: ${field} must be a positive integer; got ${JSON.stringify(v)}`);
  };
  positive("microBatch", input.microBatch);
  positive("accumulateGradBatches", input.accumulateGradBatches);
  positive("worldSize", input.worldSize);
  if (input.microBatch === undefined) throw new RangeError("memory estimate: microBatch must be a positive integer; got undefined");
}

/**
 * Whole model, gradients and optimizer state on every device (single device, DDP).
 * `gradientsPersist`: gradients live between steps (DDP's bucket views are zeroed, not freed).
 */
export function estimateReplicatedMemory(
  strategy: string,
  input: MemoryEstimateInput,
  extra: { readonly communicationBytes: number; readonly gradientsPersist?: boolean },
): MemoryEstimate {
  checkEstimateInput(input);
  const m = modelBytes(input);
  const notes: string[] = [];
  const optimizerBytes = input.optimizerBytesPerParameter ?? 8;
  // Autocast keeps a 16-bit copy of each matrix product's weights between steps.
  const castCopies = autocastCopyBytes(input);
  if (castCopies > 0) notes.push("workspace: autocast's 16-bit copies of the matrix products' weights");
  const profile = resolveActivations(input);
  notes.push(activationNote(profile));
  const gradientsHeld = extra.gradientsPersist === true || (input.accumulateGradBatches ?? 1) > 1;
  const grads = segmentGradients(input, profile);
  const held: HeldBytes = {
    parameters: m.parameters,
    gradients: gradientsHeld ? m.trainable : 0,
    optimizerState: m.trainableElements * optimizerBytes,
    gatheredUnits: 0,
    communication: extra.communicationBytes,
    workspace: castCopies,
  };
  const layout: StepLayout = {
    held,
    segment: (_s, i) => ({ gathered: 0, gradientsKept: gradientsHeld ? 0 : grads.perSegment[i], gradientBuffer: 0 }),
    otherGradients: gradientsHeld ? 0 : grads.other,
    optimizerWorkspace: 0,
  };
  const peak = simulateStep(profile, layout);
  notes.push(`peak: ${peak.where}`);
  return { strategy, perDevice: peak.breakdown, perHost: EMPTY_BREAKDOWN, disk: 0, notes, peak: { phase: peak.phase, where: peak.where } };
}

