/**
 * What an offloaded rank holds in host memory over a step, for the sharded memory estimate
 * (memory.ts): the slices, gradient slices and optimizer state of the units offloaded, less what
 * NVMe offload keeps on disk and reads in only for its use (nvme/). Between optimizer steps the
 * state on disk is not in memory at all, and a parameter slice on disk is read in for its unit's
 * gather and put back at once (on the CPU the group reads it at the call). The optimizer step
 * reads the state (and the slices) in pieces of whole units: while piece k is updated, piece k+1
 * is being read and piece k-1 written ([Note: the piecewise step] in nvme/piecewiseStep.ts), so
 * three neighbouring pieces are in memory at its highest.
 */
import type { MemoryEstimateInput } from "@fulgur/core";
import { modelBytes } from "@fulgur/strategy-kit";
import type { OffloadKeep } from "./api";
import { piecesOf } from "./nvme/piecewiseStep";

/** What NVMe offload puts on disk, and the optimizer step's piece size in elements (sub_group_size). */
export interface NvmeLayout {
  readonly optimizerState: boolean;
  readonly parameters: boolean;
  readonly subGroupSize: number;
}

export interface SliceBytes {
  readonly parameters: number;
  readonly gradients: number;
  readonly optimizerState: number;
}

export interface HostOverStep {
  /** In memory through forward and backward. */
  readonly between: SliceBytes;
  /** In memory at the optimizer step's highest. */
  readonly step: SliceBytes;
  /** A parameter slice read from disk for a gather, beside `between` for a moment. */
  readonly gatherRead: number;
  /** Bytes on disk. */
  readonly disk: number;
}

/**
 * `all`: every unit in the engine's order (wrapped units as given, the root unit "" last), and
 * whether it lives on disk (offloaded, and neither kept on the device nor in host memory: [Note:
 * three tiers] in api.ts); `held`: the offloaded units' bytes in host memory without NVMe;
 * `slicesOnDisk`: whether a unit's parameter slice can go to disk (not a unit resident on its
 * rank, whose module computes from the slice itself).
 */
export function hostOverStep(
  input: MemoryEstimateInput,
  all: readonly UnitBytes[],
  shards: number,
  held: SliceBytes,
  nvme: NvmeLayout | null,
  slicesOnDisk: boolean,
): HostOverStep {
  if (!nvme) return { between: held, step: held, gatherRead: 0, disk: 0 };
  const optimizerBytes = input.optimizerBytesPerParameter ?? 8;
  const units = all.map((u) => ({
    // A piece is a run of whole units of at most subGroupSize elements of this rank's slices (at
    // least one unit), every unit counted; only those on disk are read and written.
    elements: Math.ceil(u.elements / shards),
    state: nvme.optimizerState && u.onDisk ? (u.elements * optimizerBytes) / shards : 0,
    slice: nvme.parameters && slicesOnDisk && u.onDisk ? u.parameters / shards : 0,
  }));
  const sum = (xs: readonly { state: number; slice: number }[]) => xs.reduce((s, x) => ({ state: s.state + x.state, slice: s.slice + x.slice }), { state: 0, slice: 0 });
  const pieces = piecesOf(units, nvme.subGroupSize, (u) => u.elements).map(sum);
  let step = { state: 0, slice: 0 };
  pieces.forEach((_, k) => {
    const near = sum(pieces.slice(Math.max(0, k - 1), k + 2));
    if (near.state + near.slice > step.state + step.slice) step = near;
  });
  const onDisk = sum(units);
  const between = { parameters: held.parameters - onDisk.slice, gradients: held.gradients, optimizerState: held.optimizerState - onDisk.state };
  return {
    between,
    step: { parameters: between.parameters + step.slice, gradients: held.gradients, optimizerState: between.optimizerState + step.state },
    gatherRead: Math.max(0, ...units.map((u) => u.slice)),
    disk: onDisk.state + onDisk.slice,
  };
}

export interface UnitBytes {
  readonly path: string;
  /** Trainable elements (optimizer state is per element). */
  readonly elements: number;
  readonly parameters: number;
  readonly onDisk: boolean;
}

/** Every unit in the engine's order, with its trainable elements, parameter bytes and whether it lives on disk. */
export function unitsOnDisk(input: MemoryEstimateInput, units: readonly string[], keep: OffloadKeep | null): UnitBytes[] {
  const all = modelBytes(input);
  const wrapped = units.map((u) => ({ path: u, ...modelBytes(input, [u]) }));
  const root = {
    path: "",
    parameters: all.parameters - wrapped.reduce((n, u) => n + u.parameters, 0),
    trainableElements: all.trainableElements - wrapped.reduce((n, u) => n + u.trainableElements, 0),
  };
  const elsewhere = new Set([...(keep?.optimizerState ?? []), ...(keep?.host ?? [])]);
  return [...wrapped, root].map((u) => ({ path: u.path, elements: u.trainableElements, parameters: u.parameters, onDisk: !elsewhere.has(u.path) }));
}
