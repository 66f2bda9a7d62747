/**
 * The checkpoint round trip: the trained module's state (and the optimizer's) goes out through the
 * strategy's own `saveCheckpoint` and comes back through its `loadCheckpoint` into a fresh module
 * set up by the same strategy, as a resume does; then the fresh module's state must equal what was
 * saved, bit for bit, on every rank. The tensors are named as the Trainer names them, so a strategy
 * that reads the layout of its checkpoints sees the one it will see in a real run.
 */
import {
  type Checkpoint,
  type CheckpointMeta,
  MODEL_PREFIX,
  OPTIMIZER_PREFIX,
  type OptimizerState,
  type Precision,
  type Strategy,
  handlesOptimizerState,
} from "@fulgur/core";
import { type Optimizer, flattenOptimizerState, unflattenOptimizerState } from "@fulgur/nn";
import type { Tensor } from "@fulgur/tensor";
import type { CheckpointRecord } from "./protocol";
import { type PreparedModel, prepareModel } from "./trainingLoop";

// The Trainer's names for the two parts of a checkpoint (@fulgur/trainer's checkpointing.ts, which
// the kit cannot import: it sits above it).
/** JSON beside the tensors, with a non-ASCII character, which must come back unchanged. */
const META_PROBE = { conformance: { note: "round trip, ünïcode", steps: 5 } };

interface HostTensor {
  readonly dtype: string;
  readonly shape: readonly number[];
  readonly bytes: Uint8Array;
}

function snapshot(tensors: Record<string, Tensor>): Map<string, HostTensor> {
  const out = new Map<string, HostTensor>();
  for (const [name, t] of Object.entries(tensors)) {
    const host = t.toHost();
    out.set(name, { dtype: t.dtype, shape: [...t.shape], bytes: new Uint8Array(host.buffer.slice(host.byteOffset, host.byteOffset + host.byteLength)) });
  }
  return out;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Every difference between what was saved and what came back, one sentence each (at most a few named). */
function compare(what: string, saved: Map<string, HostTensor>, loaded: Map<string, HostTensor>): string[] {
  const problems: string[] = [];
  const missing = [...saved.keys()].filter((k) => !loaded.has(k));
  const extra = [...loaded.keys()].filter((k) => !saved.has(k));
  if (missing.length) problems.push(`${what}: ${missing.length} tensor(s) missing after loading (${missing.slice(0, 4).join(", ")})`);
  if (extra.length) problems.push(`${what}: ${extra.length} tensor(s) that were not saved (${extra.slice(0, 4).join(", ")})`);
  const differ: string[] = [];
  for (const [name, s] of saved) {
    const l = loaded.get(name);
    if (!l) continue;
    if (l.dtype !== s.dtype || l.shape.join(",") !== s.shape.join(",")) {
      differ.push(`${name} (${s.dtype} [${s.shape.join(", ")}] came back as ${l.dtype} [${l.shape.join(", ")}])`);
    } else if (!sameBytes(s.bytes, l.bytes)) differ.push(`${name} (values differ)`);
  }
  if (differ.length) problems.push(`${what}: ${differ.length} tensor(s) differ from what was saved: ${differ.slice(0, 4).join("; ")}`);
  return problems;
}

/** The optimizer's state as the Trainer takes it: from the strategy when it handles it, else flattened from the optimizer. */
async function optimizerStateOf(strategy: Strategy, optimizer: Optimizer): Promise<OptimizerState> {
  if (handlesOptimizerState(strategy)) return strategy.optimizerStateDict(optimizer);
  const flat = flattenOptimizerState(optimizer.stateDict());
  return { tensors: flat.tensors, meta: flat.meta as unknown as CheckpointMeta };
}

async function loadOptimizerState(strategy: Strategy, optimizer: Optimizer, state: OptimizerState): Promise<void> {
  if (handlesOptimizerState(strategy)) await strategy.loadOptimizerStateDict(optimizer, state);
  else optimizer.loadStateDict(unflattenOptimizerState(state.tensors, state.meta as never));
}

function part(checkpoint: Checkpoint, prefix: string): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [k, v] of Object.entries(checkpoint.tensors)) if (k.startsWith(prefix)) out[k.slice(prefix.length)] = v;
  return out;
}

export interface RoundTrip {
  readonly record: CheckpointRecord;
  /** The fresh module and optimizer, set up by the strategy and loaded from the checkpoint. */
  readonly fresh: PreparedModel;
}

export async function roundTripCheckpoint(
  strategy: Strategy,
  precision: Precision,
  trained: PreparedModel,
  o: { readonly path: string; readonly seed: number },
): Promise<RoundTrip> {
  const problems: string[] = [];
  const moduleState = await strategy.moduleStateDict(trained.module);
  const optimizerState = await optimizerStateOf(strategy, trained.optimizer);
  const savedModule = snapshot(moduleState);
  const savedOptimizer = snapshot(optimizerState.tensors);
  const tensors: Record<string, Tensor> = {};
  for (const [k, v] of Object.entries(moduleState)) tensors[MODEL_PREFIX + k] = v;
  for (const [k, v] of Object.entries(optimizerState.tensors)) tensors[OPTIMIZER_PREFIX + k] = v;
  await strategy.saveCheckpoint({ tensors, meta: { ...META_PROBE, optimizer: optimizerState.meta } }, o.path);

  // A different seed, so the fresh module holds other values until the checkpoint is loaded.
  const fresh = await prepareModel(strategy, precision, o.seed + 1);
  const loaded = await strategy.loadCheckpoint(o.path);
  try {
    if (JSON.stringify(loaded.meta.conformance) !== JSON.stringify(META_PROBE.conformance)) {
      problems.push(`checkpoint meta: saved ${JSON.stringify(META_PROBE.conformance)}, loaded ${JSON.stringify(loaded.meta.conformance)}`);
    }
    await strategy.loadModuleStateDict(fresh.module, part(loaded, MODEL_PREFIX));
    await loadOptimizerState(strategy, fresh.optimizer, { tensors: part(loaded, OPTIMIZER_PREFIX), meta: loaded.meta.optimizer as CheckpointMeta });
  } finally {
    for (const t of Object.values(loaded.tensors)) t.dispose();
  }
  problems.push(...compare("module state", savedModule, snapshot(await strategy.moduleStateDict(fresh.module))));
  const after = await optimizerStateOf(strategy, fresh.optimizer);
  problems.push(...compare("optimizer state", savedOptimizer, snapshot(after.tensors)));
  return {
    record: { kind: "checkpoint", tensors: savedModule.size, optimizerTensors: savedOptimizer.size, problems },
    fresh,
  };
}
