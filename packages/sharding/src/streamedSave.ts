/**
 * A full checkpoint of a sharded model written unit by unit, for FSDP and ZeRO: rank 0 gathers one
 * unit at a time and streams it into one safetensors file without ever holding the whole model.
 *
 * The Trainer's checkpoint is built from placeholders: each sharded parameter, and each of its
 * optimizer state tensors, is a tensor on the `meta` device (shape and dtype, no memory). The file
 * is then written with the placeholders' bytes produced in runs, one run per gather: a unit's
 * parameters, then each of its optimizer states by name. Every rank walks the same runs in the same
 * order (the gathers are collectives); rank 0 copies each gathered tensor to the host as the writer
 * reaches it and frees the run before the next one is gathered, so rank 0 holds about one unit
 * (its whole tensors on the device and the host) beside its own shards, never the model.
 */
import type { Checkpoint, CheckpointIO, CheckpointMeta, OptimizerState, StreamedSaveInput } from "@fulgur/core";
import { type LazyTensor, lazyTensor } from "@fulgur/checkpoint-io";
import type { FlatUnit } from "./flatUnit";
import { type StateEntry, namedOptimizerState } from "@fulgur/strategy-kit";
import { type Tensor, zeros } from "@fulgur/tensor";

/** One gather: a unit's parameters, or one optimizer state of its parameters. */
interface Run {
  readonly unit: FlatUnit;
  /** null: the parameters; else the optimizer state's name ("exp_avg"). */
  readonly state: string | null;
  /** Slot index in the unit and, for state, this rank's segment of it. */
  readonly items: { index: number; segment: Tensor | null }[];
}

export interface StreamedPlan {
  readonly checkpoint: Checkpoint;
  /** The tensors in the order they are written: real ones first, then each run's placeholders. */
  readonly order: readonly { key: string; run: Run | null; item: number }[];
  readonly runs: readonly Run[];
}

/**
 * A checkpoint IO that writes tensors produced one at a time, in the order given, into one file
 * (@fulgur/checkpoint-io's FullCheckpointIO): the entries carry name, dtype and shape, so the
 * header is written first, and each one's `bytes()` is called when the file reaches it.
 */
export interface StreamingCheckpointIO extends CheckpointIO {
  saveStreamed(tensors: readonly LazyTensor[], meta: CheckpointMeta, path: string): Promise<void>;
}

/** Whether `io` can take a streamed save (checked by shape, DESIGN.md decision 11). */
export function streamsTensors(io: CheckpointIO): io is StreamingCheckpointIO {
  return typeof (io as Partial<StreamingCheckpointIO>).saveStreamed === "function";
}

const placeholder = (t: { shape: readonly number[]; dtype: Tensor["dtype"] }): Tensor => zeros([...t.shape], { dtype: t.dtype, device: "meta" });

/**
 * Streams a full save (the `saveStreamed` ability of @fulgur/core): `write` is the checkpoint IO's
 * streamed writer, called on rank 0 only; the other ranks follow the gathers.
 */
export async function saveFullStreamed(
  input: StreamedSaveInput,
  units: readonly FlatUnit[],
  segmentOf: (p: Tensor) => { unit: FlatUnit; index: number } | undefined,
  isGlobalZero: boolean,
  write: (tensors: readonly LazyTensor[], meta: Checkpoint["meta"]) => Promise<void>,
): Promise<void> {
  const fqnOf = (p: Tensor) => {
    const at = segmentOf(p);
    return at ? at.unit.layout.slots[at.index].fqn : undefined;
  };
  const plan = planStreamedSave(input, units, segmentOf, fqnOf);
  const stream = isGlobalZero ? streamedTensors(plan) : null;
  try {
    if (stream) await write(stream.tensors, plan.checkpoint.meta);
    else followStreamedSave(plan);
  } finally {
    // A write that failed half-way leaves its run gathered: free it before the error goes on.
    stream?.release();
    disposePlaceholders(plan);
  }
}

/** Builds the checkpoint around placeholders and the order the file is written in. */
export function planStreamedSave(
  input: StreamedSaveInput,
  units: readonly FlatUnit[],
  segmentOf: (p: Tensor) => { unit: FlatUnit; index: number } | undefined,
  fqnOf: (p: Tensor) => string | undefined,
): StreamedPlan {
  const slotOf = new Map<Tensor, { run: Run; item: number }>();
  const runs: Run[] = [];
  const moduleState: Record<string, Tensor> = {};
  for (const unit of units) {
    const run: Run = { unit, state: null, items: [] };
    unit.layout.slots.forEach((slot, index) => {
      const t = placeholder({ shape: slot.shape, dtype: unit.master.dtype });
      slotOf.set(t, { run, item: run.items.length });
      run.items.push({ index, segment: null });
      moduleState[slot.fqn] = t;
    });
    runs.push(run);
  }
  for (const [name, b] of input.module.namedBuffers()) moduleState[name] = b;

  let optimizerState: OptimizerState | null = null;
  if (input.optimizer) {
    optimizerState = namedOptimizerState(input.optimizer, fqnOf, (entries: readonly StateEntry[]) => {
      // One run per unit and state name, units in order, names sorted: the same on every rank.
      const byUnit = new Map<FlatUnit, Map<string, Run>>();
      return entries.map((e) => {
        const at = segmentOf(e.param)!;
        const slot = at.unit.layout.slots[at.index];
        const names = byUnit.get(at.unit) ?? new Map<string, Run>();
        byUnit.set(at.unit, names);
        const run = names.get(e.stateName) ?? { unit: at.unit, state: e.stateName, items: [] };
        names.set(e.stateName, run);
        const t = placeholder({ shape: slot.shape, dtype: e.tensor.dtype });
        slotOf.set(t, { run, item: run.items.length });
        run.items.push({ index: at.index, segment: e.tensor });
        return t;
      });
    });
  }
  const stateRuns = new Map<FlatUnit, Run[]>();
  for (const { run } of slotOf.values()) {
    if (run.state === null) continue;
    const list = stateRuns.get(run.unit) ?? [];
    if (!list.includes(run)) list.push(run);
    stateRuns.set(run.unit, list);
  }
  const ordered: Run[] = [];
  for (const r of runs) ordered.push(r, ...(stateRuns.get(r.unit) ?? []).sort((a, b) => (a.state! < b.state! ? -1 : 1)));

  const checkpoint = input.build(moduleState, optimizerState);
  const real: { key: string; run: null; item: number }[] = [];
  const byRun = new Map<Run, { key: string; run: Run; item: number }[]>();
  for (const [key, t] of Object.entries(checkpoint.tensors)) {
    const at = slotOf.get(t);
    if (!at) real.push({ key, run: null, item: -1 });
    else byRun.set(at.run, [...(byRun.get(at.run) ?? []), { key, run: at.run, item: at.item }]);
  }
  const order = [...real, ...ordered.flatMap((r) => (byRun.get(r) ?? []).sort((a, b) => a.item - b.item))];
  return { checkpoint, order, runs: ordered.filter((r) => byRun.has(r)) };
}

/** The run's whole tensors, gathered over the unit's shard group (a collective: every rank calls it). */
function gatherRun(run: Run): Tensor[] {
  if (run.state === null) {
    const all = run.unit.fullValues();
    const wanted = new Set(run.items.map((i) => i.index));
    return all.filter((t, index) => (wanted.has(index) ? true : (t.dispose(), false)));
  }
  return run.unit.gatherSegments(run.items.map((i) => ({ index: i.index, tensor: i.segment! })));
}

/**
 * Rank 0: the tensors for the writer, each placeholder's bytes made when the writer reaches it
 * (its run gathered at its first tensor, freed after its last).
 */
export function streamedTensors(plan: StreamedPlan): { tensors: LazyTensor[]; release: () => void } {
  let current: { run: Run; whole: Tensor[] } | null = null;
  const free = () => {
    for (const t of current?.whole ?? []) t.dispose();
    current = null;
  };
  const tensors = plan.order.map(({ key, run, item }, position) => {
    const t = plan.checkpoint.tensors[key];
    if (run === null) return lazyTensor(key, t);
    const spec = lazyTensor(key, t);
    const lastOfRun = plan.order[position + 1]?.run !== run;
    return {
      ...spec,
      bytes: () => {
        if (current?.run !== run) {
          free();
          current = { run, whole: gatherRun(run) };
        }
        const bytes = lazyTensor(key, current!.whole[item]).bytes();
        if (lastOfRun) free();
        return bytes;
      },
    };
  });
  return { tensors, release: free };
}

/** The other ranks: the same gathers in the same order, their results dropped. */
export function followStreamedSave(plan: StreamedPlan): void {
  for (const run of plan.runs) for (const t of gatherRun(run)) t.dispose();
}

/** Frees the placeholders (they hold no memory, but each is a tensor to dispose). */
export function disposePlaceholders(plan: StreamedPlan): void {
  for (const { key, run } of plan.order) if (run !== null) plan.checkpoint.tensors[key].dispose();
}

