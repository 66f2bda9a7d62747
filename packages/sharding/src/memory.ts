/**
 * What the engine holds through a training step, per device and per host, for FSDP's and ZeRO's
 * memory estimates (DESIGN.md decision 13), laid out for the kit's step simulation: each rank's
 * slices of the parameters, gradients and optimizer state (on the host when offloaded), the root
 * unit gathered for the whole step with its gradient buffer, and around each wrapped unit's
 * compute the unit gathered (with the prefetched ones and its autocast copies) and, in backward,
 * its flat gradient buffer until the reduce-scatter (see engine.ts's header).
 */
import type { MemoryEstimate, MemoryEstimateInput } from "@fulgur/core";
import type { ActivationProfile, ActivationSegment } from "@fulgur/nn";
import { DOWNLOADS_IN_FLIGHT, type OffloadKeep, keepThatActs } from "./api";
import { type NvmeLayout, type UnitBytes, hostOverStep, unitsOnDisk } from "./offloadHostMemory";
import { streamedStepBytes } from "./deviceStep";
import { owningUnit } from "./layout";
import { type DType, itemsize } from "@fulgur/tensor";
import {
  EMPTY_BREAKDOWN,
  activationNote,
  autocastCopyBytes,
  breakdown,
  checkEstimateInput,
  modelBytes,
  precisionDtypes,
  resolveActivations,
  segmentGradients,
  simulateStep,
  type StepLayout,
} from "@fulgur/strategy-kit";

export interface ShardedMemoryLayout {
  /** Ranks each unit is sharded over (1: replicated, NO_SHARD). */
  readonly shards: number;
  /** Wrapped units' module paths; the root unit holds the rest. */
  readonly units: readonly string[];
  /** Units gathered ahead of the computing one. */
  readonly prefetch: number;
  /** true: freed after forward; false: kept until backward; k: kept sharded over k ranks between them. */
  readonly reshardAfterForward: boolean | number;
  /** Units (by path) whose own reshardAfterForward differs from the layout's (FSDP's per-unit `fullyShard` options). */
  readonly unitReshardAfterForward?: ReadonlyMap<string, boolean | number>;
  /** Units stay gathered from step to step (ZeRO stages 1 and 2). */
  readonly keepGathered: boolean;
  /** Slices, gradient slices and optimizer state in host memory. */
  readonly offload: boolean;
  /** With offload: the units that keep state on the device anyway ([Note: units kept on the device] in api.ts). */
  readonly keep?: OffloadKeep | null;
  /**
   * The only rank of the job (world 1): units are resident, so autograd's own gradients are the
   * optimizer's and autocast copies are the only thing a unit frees ([Note: a rank alone]).
   */
  readonly alone?: boolean;
  /**
   * With offload: offloaded units compute in a narrower dtype than their master (an explicit
   * paramDtype); on a GPU they keep a host copy in it for the uploads. Their slices go up
   * one unit ahead of their gather ([Note: upload one unit ahead] in flatUnit.ts).
   */
  readonly uploadsAhead?: boolean;
  /** With offload: what NVMe offload keeps on disk (offloadHostMemory.ts), or null. */
  readonly nvme?: NvmeLayout | null;
  /**
   * With offload: the share of the optimizer step streamed through the device ([Note: the step
   * streamed through the device] in deviceStep.ts), whose pieces in flight are the step's workspace.
   */
  readonly deviceStepShare?: number;
  /**
   * Units ("" for the root unit) that gather and compute in a dtype of their own (mixed precision's
   * paramDtype) rather than the master's; the others gather in the master dtype.
   */
  readonly computeDtypes?: ReadonlyMap<string, DType>;
  /** Modules whose forward is recomputed in backward (activation checkpointing). */
  readonly checkpointed: readonly string[];
  readonly notes: readonly string[];
}

const within = (name: string, path: string): boolean => path === "" || name === path || name.startsWith(`${path}.`);

/** The unit a segment computes in: the innermost wrapped path holding its first module, or "" (the root). */
function unitOf(segment: ActivationSegment, units: readonly string[]): string {
  let best = "";
  for (const u of units) if (segment.modules.some((m) => within(m, u)) && u.length > best.length) best = u;
  return best;
}

/** Checkpointed segments keep only their input; backward recomputes the rest first. */
export function checkpointSegments(profile: ActivationProfile | null, checkpointed: readonly string[]): ActivationProfile | null {
  if (!profile || checkpointed.length === 0) return profile;
  const segments = profile.segments.map((s) => {
    if (!s.modules.some((m) => checkpointed.some((c) => within(m, c))) || s.inputBytes === undefined) return s;
    return {
      ...s,
      savedBytes: s.inputBytes,
      forwardTransientBytes: s.savedBytes + s.forwardTransientBytes,
      backwardTransientBytes: s.savedBytes + s.backwardTransientBytes,
    };
  });
  return { segments, source: `${profile.source}, ${checkpointed.length} module(s) checkpointed` };
}

/** Trainable elements of the wrapped units together. */
function wrappedElements(input: MemoryEstimateInput, units: readonly string[]): number {
  return units.reduce((n, u) => n + modelBytes(input, [u]).trainableElements, 0);
}

/**
 * [Note: a rank alone] At world 1 with nothing offloaded every unit is resident (flatUnit.ts): its
 * parameters are views of its flat buffer, nothing is gathered, and autograd's own gradients are
 * the ones the optimizer steps, allocated in backward as on a single device (no gradient slice, no
 * flat gradient buffer). What a unit still frees is its autocast copies ([Note: autocast copies
 * reshard too]): a unit that reshards after forward drops them once its forward is done and casts
 * them again before its backward (a unit ahead), and after backward they stay for the optimizer to
 * write. So while segment i computes the copies held are those of the units whose last segment is
 * i or later, and in a wrapped unit's backward the wrapped unit's before it; the optimizer step
 * holds all of them. Without this the plan counted
 * a gradient slice and a flat gradient buffer beside autograd's gradients (FSDP at world 1 on the
 * 1b GPT: 19.4 GiB estimated against 15.7 measured).
 */
function estimateAlone(strategy: string, input: MemoryEstimateInput, layout: ShardedMemoryLayout): MemoryEstimate {
  const all = modelBytes(input);
  const optimizerBytes = input.optimizerBytesPerParameter ?? 8;
  const accumulating = (input.accumulateGradBatches ?? 1) > 1;
  const profile = checkpointSegments(resolveActivations(input), layout.checkpointed);
  const segments = profile?.segments ?? [];
  const grads = segmentGradients(input, profile);
  const unitCasts = layout.units.map((u) => autocastCopyBytes(input, u));
  const lastSegment = layout.units.map((u) => segments.reduce((last, s, i) => (unitOf(s, layout.units) === u ? i : last), -1));
  const unitCastTotal = unitCasts.reduce((a, b) => a + b, 0);
  const releases = layout.reshardAfterForward !== false && !layout.keepGathered;
  // In a wrapped unit's backward, the copies of the wrapped unit before it too, cast a unit ahead
  // ([Note: casts ahead of backward] in engine.ts). Counted in forward as well, where it is one
  // unit's copies too many; the root unit's segments (embeddings, head) cast nothing ahead.
  const castAhead = (s: ActivationSegment, i: number): number => {
    const k = layout.units.indexOf(unitOf(s, layout.units));
    return k >= 1 && lastSegment[k - 1] >= 0 && lastSegment[k - 1] < i ? unitCasts[k - 1] : 0;
  };
  // Copies of units no segment computes in are never released; with no release all copies stay.
  const alwaysHeld = releases ? unitCasts.reduce((sum, c, k) => (lastSegment[k] < 0 ? sum + c : sum), 0) : unitCastTotal;
  const step: StepLayout = {
    held: {
      parameters: all.parameters,
      gradients: accumulating ? all.trainable : 0,
      optimizerState: all.trainableElements * optimizerBytes,
      gatheredUnits: 0,
      communication: 0,
      workspace: autocastCopyBytes(input) - unitCastTotal + alwaysHeld,
    },
    segment: (s, i) => ({
      gathered: 0,
      gradientsKept: accumulating ? 0 : grads.perSegment[i],
      gradientBuffer: 0,
      workspace: releases ? unitCasts.reduce((sum, c, k) => (lastSegment[k] >= i ? sum + c : sum), 0) + castAhead(s, i) : 0,
    }),
    otherGradients: accumulating ? 0 : grads.other,
    optimizerWorkspace: unitCastTotal - alwaysHeld,
  };
  const peak = simulateStep(profile, step);
  return {
    strategy,
    perDevice: peak.breakdown,
    perHost: EMPTY_BREAKDOWN,
    disk: 0,
    notes: [...layout.notes, "one rank: units resident, autograd's gradients are the optimizer's", activationNote(profile), `peak: ${peak.where}`],
    peak: { phase: peak.phase, where: peak.where },
  };
}

/**
 * Bytes of reduced gradients waiting to be added into their slice while segment i computes (the
 * step's later micro-batches: [Note: reduced into the slice] in flatUnit.ts). A unit is reduced
 * when the backward of its first segment is done, into a buffer of its own from the second
 * micro-batch of a window on, and that buffer is added into the slice when the next unit is
 * reduced. So backward holds the slice of the unit reduced last, and from the third micro-batch
 * on the forward holds the previous micro-batch's last one. `reduces`: whether a unit's reduction
 * takes this path (not a resident unit, not one whose gradients go down to a GPU's host).
 */
function reducedGradientsPending(
  input: MemoryEstimateInput,
  layout: ShardedMemoryLayout,
  profile: ActivationProfile | null,
  reduces: (unit: string) => boolean,
): (segment: number) => { readonly forward: number; readonly backward: number } {
  const accumulate = input.accumulateGradBatches ?? 1;
  if (accumulate === 1) return () => ({ forward: 0, backward: 0 });
  const segments = profile?.segments ?? [];
  // Each reducing unit with the index of its first segment, in forward order.
  const firsts = layout.units
    .filter(reduces)
    .map((u) => ({ slice: modelBytes(input, [u]).trainable / layout.shards, first: segments.findIndex((s) => unitOf(s, layout.units) === u) }))
    .filter((u) => u.first >= 0)
    .sort((a, b) => a.first - b.first);
  const lastOfPreviousMicroBatch = accumulate > 2 && firsts.length > 0 ? firsts[0].slice : 0;
  return (i) => {
    // In backward, segment i runs after every unit whose first segment comes later has been reduced.
    const reduced = firsts.find((u) => u.first > i);
    return { forward: lastOfPreviousMicroBatch, backward: reduced ? reduced.slice : lastOfPreviousMicroBatch };
  };
}

export function estimateShardedMemory(strategy: string, input: MemoryEstimateInput, layout: ShardedMemoryLayout): MemoryEstimate {
  checkEstimateInput(input);
  if (layout.alone === true && layout.shards === 1 && !layout.offload) return estimateAlone(strategy, input, layout);
  const { shards, units, prefetch } = layout;
  const all = modelBytes(input);
  const optimizerBytes = input.optimizerBytesPerParameter ?? 8;
  const accumulating = (input.accumulateGradBatches ?? 1) > 1;
  // A unit with its own compute dtype gathers (and takes gradients) in it, and autocast has nothing
  // to cast for it: its gathered bytes scale by that dtype's size over the master's.
  const scale = (u: string) => {
    const dtype = layout.computeDtypes?.get(u);
    return dtype ? itemsize(dtype) / masterItemsize(input) : 1;
  };
  const gatheredBytes = (b: { parameters: number; trainable: number }, u: string) => ({ ...b, parameters: b.parameters * scale(u), trainable: b.trainable * scale(u) });
  // Each unit's bytes in the master dtype, read off the module once.
  const masterBytes = new Map(units.map((u) => [u, modelBytes(input, [u])]));
  const unitBytes = new Map(units.map((u) => [u, gatheredBytes(masterBytes.get(u)!, u)]));
  const unitCasts = new Map(units.map((u) => [u, scale(u) === 1 ? autocastCopyBytes(input, u) : 0]));
  const wrappedMaster = [...masterBytes.values()].reduce((s, b) => ({ parameters: s.parameters + b.parameters, trainable: s.trainable + b.trainable }), { parameters: 0, trainable: 0 });
  const wrapped = [...unitBytes.values()].reduce((s, b) => ({ parameters: s.parameters + b.parameters, trainable: s.trainable + b.trainable }), { parameters: 0, trainable: 0 });
  const root = gatheredBytes({ parameters: all.parameters - wrappedMaster.parameters, trainable: all.trainable - wrappedMaster.trainable }, "");
  const rootCasts = scale("") === 1 ? autocastCopyBytes(input) - units.reduce((a, u) => a + autocastCopyBytes(input, u), 0) : 0;
  const largest = Math.max(0, ...[...unitBytes.values()].map((b) => b.parameters));
  const slices = { parameters: all.parameters / shards, gradients: all.trainable / shards, optimizerState: (all.trainableElements * optimizerBytes) / shards };
  // Units kept on the device with offload: their slices stay there, and their gathered copies stay
  // from step to step (a unit alone on its rank with its slice there is resident: no copy at all).
  const keep = keepThatActs(layout.offload, layout.keep ?? null);
  const unitSlices = (paths: readonly string[]) => {
    const b = paths.map((u) => (u === "" ? { ...root, elements: all.trainableElements - wrappedElements(input, units) } : { ...unitBytes.get(u)!, elements: modelBytes(input, [u]).trainableElements }));
    return b.reduce(
      (s, x) => ({ parameters: s.parameters + x.parameters / shards, gradients: s.gradients + x.trainable / shards, optimizerState: s.optimizerState + (x.elements * optimizerBytes) / shards }),
      { parameters: 0, gradients: 0, optimizerState: 0 },
    );
  };
  const keptSlices = keep ? unitSlices(keep.optimizerState.filter((u) => u === "" || unitBytes.has(u))) : { parameters: 0, gradients: 0, optimizerState: 0 };
  const resident = (u: string): boolean => shards === 1 && (keep?.optimizerState.includes(u) ?? false);
  const keptCopies = new Set(keep && !layout.keepGathered ? keep.parameters.filter((u) => unitBytes.has(u) && !resident(u)) : []);
  const keptCopyBytes = [...keptCopies].reduce((n, u) => n + unitBytes.get(u)!.parameters, 0);
  const rootResident = resident("");
  const keptCasts = keep ? keep.parameters.filter((u) => unitCasts.has(u)).reduce((n, u) => n + unitCasts.get(u)!, 0) : 0;
  const onDevice = layout.offload ? keptSlices : slices;
  // Offloaded to a GPU's host, units that compute in a narrower dtype keep their slice in it too,
  // in host memory, for the uploads ([Note: uploads in the compute dtype] in flatUnit.ts): half
  // the master's bytes for bf16 or fp16 over fp32. Not for slices on disk.
  const hostCopies = layout.offload && input.copiesCrossBus === true && layout.uploadsAhead === true && layout.nvme?.parameters !== true ? 0.5 : 0;
  // Offloaded to a GPU's host with a share of the step on the device: the units chosen for it (the
  // engine's rule: offloaded units whose state stays in host memory, in order, until they hold the
  // share) keep their gradient slices on the device ([Note: gradients beside the streamed step]).
  // Every unit, the root last, with where its state lives (offloadHostMemory.ts).
  const placed = layout.offload ? unitsOnDisk(input, units, keep) : [];
  const streamedGradients = layout.offload && input.copiesCrossBus === true ? streamedGradientBytes(input, layout, placed, shards) : 0;
  // Offloaded to a GPU's host with accumulation: later micro-batches' gradients come down into
  // pinned scratch buffers the units share and keep for reuse ([Note: later micro-batches added
  // beside backward] in flatUnit.ts): about the units under way at once, the largest's fp32 slice each.
  const scratch = layout.offload && input.copiesCrossBus === true && accumulating ? ((DOWNLOADS_IN_FLIGHT + 2) * Math.max(0, ...placed.filter((u) => !(keep?.optimizerState.includes(u.path) ?? false)).map((u) => u.elements)) * 4) / shards : 0;
  const onHost = layout.offload
    ? {
        parameters: (slices.parameters - keptSlices.parameters) * (1 + hostCopies),
        gradients: slices.gradients - keptSlices.gradients - streamedGradients + scratch,
        optimizerState: slices.optimizerState - keptSlices.optimizerState,
      }
    : null;
  const profile = checkpointSegments(resolveActivations(input), layout.checkpointed);
  const replicated = shards === 1 && !layout.offload;
  // Offloaded to a GPU's host: a slice on its way up before its gather (two when gathers cast: one
  // uploaded a unit ahead, [Note: upload one unit ahead] in flatUnit.ts, and the one being cast, where
  // there is a unit past the prefetched ones to upload), and reduced gradient slices on their way
  // down (the one reduced last and DOWNLOADS_IN_FLIGHT before it, engine.ts). Slices read from disk
  // are not uploaded ahead.
  // Reduced gradients come down in the master dtype (cast on the device first when reduced in
  // another). Slices go up in it too until an optimizer step has written their host copies
  // ([Note: uploads in the compute dtype] in flatUnit.ts): the first step's gathers are the highest.
  const largestTrainable = Math.max(0, ...[...masterBytes.values()].map((b) => b.trainable));
  const largestUpload = Math.max(0, ...[...masterBytes.values()].map((b) => b.parameters));
  const parametersOnDisk = layout.nvme?.parameters === true;
  const uploads = 1 + (layout.uploadsAhead === true && !parametersOnDisk && units.length > prefetch + 1 ? 1 : 0);
  const busCopies = layout.offload && input.copiesCrossBus ? (uploads * largestUpload + (DOWNLOADS_IN_FLIGHT + 1) * largestTrainable) / shards : 0;
  const pending = reducedGradientsPending(input, layout, profile, (u) => !replicated && !resident(u) && !(layout.offload && input.copiesCrossBus === true && !keep?.optimizerState.includes(u)));
  const step: StepLayout = {
    held: {
      ...onDevice,
      // The root unit's gradients accumulate in one buffer over an accumulation window.
      gradients: onDevice.gradients + streamedGradients + (accumulating ? root.trainable : 0),
      gatheredUnits: replicated ? 0 : (rootResident ? 0 : root.parameters) + (layout.keepGathered ? wrapped.parameters : keptCopyBytes),
      communication: busCopies,
      // Units gathered all step keep their autocast copies all step too.
      workspace: rootCasts + (layout.keepGathered ? [...unitCasts.values()].reduce((a, b) => a + b, 0) : keptCasts),
    },
    segment: (s, i) => {
      const unit = unitOf(s, units);
      const own = modelBytes(input, s.modules).trainable;
      const reducedGradients = pending(i);
      if (unit === "") return { gathered: 0, gradientsKept: accumulating ? 0 : own, gradientBuffer: 0, reducedGradients };
      const bytes = unitBytes.get(unit)!;
      if (layout.keepGathered || replicated || keptCopies.has(unit) || resident(unit)) return { gathered: 0, gradientsKept: 0, gradientBuffer: bytes.trainable, reducedGradients };
      const casts = unitCasts.get(unit) ?? 0;
      const k = layout.unitReshardAfterForward?.get(unit) ?? layout.reshardAfterForward;
      const kept = k === false ? bytes.parameters : typeof k === "number" ? (bytes.parameters * k) / shards : 0;
      return { gathered: bytes.parameters - kept + prefetch * largest + casts, keptGathered: kept, gradientsKept: 0, gradientBuffer: bytes.trainable, reducedGradients };
    },
    otherGradients: 0,
    optimizerWorkspace: layout.offload && (layout.deviceStepShare ?? 0) > 0 ? streamedStepBytes(largestSegment(input, units, keep, shards), hostCopies > 0 ? 2 : 0) : 0,
  };
  const peak = simulateStep(profile, step);
  const notes = [...layout.notes, activationNote(profile)];
  if (!onHost) return { strategy, perDevice: peak.breakdown, perHost: EMPTY_BREAKDOWN, disk: 0, notes: [...notes, `peak: ${peak.where}`], peak: { phase: peak.phase, where: peak.where } };
  // A unit alone on its rank computes from its slice when the slice is on the device itself (the CPU backend).
  const slicesOnDisk = shards > 1 || input.copiesCrossBus === true;
  const host = hostOverStep(input, placed, shards, onHost, layout.offload ? layout.nvme ?? null : null, slicesOnDisk);
  const onHostAt = (b: { parameters: number; gradients: number; optimizerState: number }) => breakdown({ ...b, gatheredUnits: 0, communication: 0, activations: 0, workspace: 0 });
  let moment = { device: peak.breakdown, host: onHostAt(host.between), phase: peak.phase, where: peak.where };
  if (input.copiesCrossBus) {
    // A GPU's host is memory of its own: its highest is in the optimizer step, or while a slice is read for a gather.
    const step = onHostAt(host.step);
    const read = onHostAt({ ...host.between, parameters: host.between.parameters + host.gatherRead });
    moment = { ...moment, host: step.total >= read.total ? step : read };
  } else {
    // One memory (the CPU backend): the step peaks where device and host together are highest.
    const step = onHostAt(host.step);
    if (peak.optimizerStep.total + step.total > moment.device.total + moment.host.total) moment = { device: peak.optimizerStep, host: step, phase: "optimizer", where: "optimizer step" };
  }
  if (host.disk > 0) notes.push("disk: the NVMe offload's swap files; the host holds the state only in the optimizer step, three neighbouring sub_group_size pieces at a time, and a slice on disk only while its unit is gathered");
  return { strategy, perDevice: moment.device, perHost: moment.host, disk: host.disk, notes: [...notes, `peak: ${moment.where}`], peak: { phase: moment.phase, where: moment.where } };
}

/** Elements of the largest trainable parameter's local segment among the offloaded units (the streamed step's largest piece). */
function largestSegment(input: MemoryEstimateInput, units: readonly string[], keep: OffloadKeep | null, shards: number): number {
  let largest = 0;
  for (const [name, p] of input.module.namedParameters()) {
    if (p.requiresGrad && !(keep?.optimizerState.includes(owningUnit(name, units)) ?? false)) largest = Math.max(largest, Math.ceil(p.numel / shards));
  }
  return largest;
}

/** Bytes an element of the master takes as the estimate counts parameters (the precision's storage dtype, else fp32). */
function masterItemsize(input: MemoryEstimateInput): number {
  const storage = precisionDtypes(input.precision).storage;
  return itemsize(storage ?? "float32");
}

/** Bytes of the gradient slices the units chosen for the streamed step keep on the device (ShardingEngine's choice). */
function streamedGradientBytes(input: MemoryEstimateInput, layout: ShardedMemoryLayout, placed: readonly UnitBytes[], shards: number): number {
  const share = layout.deviceStepShare ?? 0;
  if (share <= 0) return 0;
  // Offloaded units whose state stays in host memory: not kept on the device, not on disk.
  const candidates = placed.filter((u) => !(layout.keep?.optimizerState.includes(u.path) ?? false) && !(layout.nvme != null && u.onDisk));
  const total = candidates.reduce((n, u) => n + u.elements, 0);
  let taken = 0;
  for (const u of candidates) {
    if (taken > 0 && taken >= share * total) break;
    taken += u.elements;
  }
  return (taken * masterItemsize(input)) / shards;
}
