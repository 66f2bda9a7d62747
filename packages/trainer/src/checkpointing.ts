/**
 * What a Trainer checkpoint holds and how it is restored: the module's state, the optimizer's
 * tensors (by flat name) and, as JSON metadata, the loop position (epoch, step, batch within the
 * epoch), the optimizer's scalars, the scheduler, the loss scaler, the random state and the
 * callbacks' state. Resuming from it continues exactly where the run stopped.
 */
import { type Checkpoint, type CheckpointMeta, MODEL_PREFIX, OPTIMIZER_PREFIX, type OptimizerState } from "@fulgur/core";
import type { LRScheduler } from "@fulgur/nn";
import type { Tensor } from "@fulgur/tensor";

export { MODEL_PREFIX, OPTIMIZER_PREFIX };
export const TRAINER_CHECKPOINT_VERSION = 1;

export interface LoopPosition {
  epoch: number;
  globalStep: number;
  /** Batches of `epoch` already consumed (equal to the epoch's length at an epoch boundary). */
  batchInEpoch: number;
}

export function buildCheckpoint(parts: {
  moduleState: Record<string, Tensor>;
  /** The optimizer's state as the strategy produced it (sharded strategies) or flattened from the optimizer. */
  optimizerState: OptimizerState | null;
  scheduler: LRScheduler | null;
  position: LoopPosition;
  extra: CheckpointMeta;
}): Checkpoint {
  const tensors: Record<string, Tensor> = {};
  for (const [k, v] of Object.entries(parts.moduleState)) tensors[MODEL_PREFIX + k] = v;
  const meta: CheckpointMeta = {
    trainer_checkpoint_version: TRAINER_CHECKPOINT_VERSION,
    loop: { ...parts.position },
    ...parts.extra,
  };
  if (parts.optimizerState) {
    for (const [k, v] of Object.entries(parts.optimizerState.tensors)) tensors[OPTIMIZER_PREFIX + k] = v;
    meta.optimizer = parts.optimizerState.meta;
    // Recorded so a resume can tell a complete file from one stripped of these tensors (optimizerStateOf).
    meta.optimizer_tensors = Object.keys(parts.optimizerState.tensors).map((k) => OPTIMIZER_PREFIX + k);
  }
  if (parts.scheduler) meta.scheduler = parts.scheduler.stateDict() as unknown as CheckpointMeta;
  return { tensors, meta };
}

export function moduleStateOf(checkpoint: Checkpoint): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [k, v] of Object.entries(checkpoint.tensors)) if (k.startsWith(MODEL_PREFIX)) out[k.slice(MODEL_PREFIX.length)] = v;
  if (Object.keys(out).length === 0) {
    // A plain weights file (e.g. saved from Python with safetensors): every tensor is module state.
    return { ...checkpoint.tensors };
  }
  return out;
}

/** What to do with a file that holds weights but cannot continue a run. */
const CANNOT_RESUME =
  "so it cannot resume training. Resume from a checkpoint saved by Trainer.fit, or start from these weights: " +
  "load moduleStateOf(checkpoint) in configureModel and fit without ckptPath";

const plural = (n: number, what: string): string => `${n} ${what}${n === 1 ? "" : "s"}`;

/**
 * The optimizer state a checkpoint holds (tensors by flat name without the prefix, and its meta).
 * Refuses, naming the file, a checkpoint without optimizer state and one whose optimizer tensors
 * are gone while their meta remains (a file converted to weights only, or filtered by hand): an
 * optimizer loaded from it would have its scalars but no moments, and fail at the next step.
 */
export function optimizerStateOf(checkpoint: Checkpoint, path: string): OptimizerState {
  const meta = checkpoint.meta.optimizer;
  if (meta === undefined) {
    const n = Object.keys(checkpoint.tensors).length;
    throw new Error(`checkpoint ${path} has no optimizer state (it holds ${plural(n, "tensor")}, model weights only), ${CANNOT_RESUME}`);
  }
  const tensors: Record<string, Tensor> = {};
  for (const [k, v] of Object.entries(checkpoint.tensors)) if (k.startsWith(OPTIMIZER_PREFIX)) tensors[k.slice(OPTIMIZER_PREFIX.length)] = v;
  const missing = missingOptimizerTensors(checkpoint, meta, Object.keys(tensors).length);
  if (missing) {
    throw new Error(
      `checkpoint ${path} holds optimizer state without its tensors (${missing}); the file was stripped of them ` +
        `(e.g. converted to weights only), ${CANNOT_RESUME}`,
    );
  }
  return { tensors, meta: meta as CheckpointMeta };
}

/**
 * What is missing, or undefined when nothing is, for optimizer state in the "fulgur-optimizer"
 * format (by index or by parameter name; another format's reader checks its own). Exact when the
 * checkpoint recorded its optimizer tensor names (`optimizer_tensors`, written since); for older
 * files, state for some parameters with not one optimizer tensor left is the stripped file's
 * signature (every built-in optimizer keeps a tensor per parameter it has state for).
 */
function missingOptimizerTensors(checkpoint: Checkpoint, meta: unknown, found: number): string | undefined {
  const flat = meta as { format?: unknown; state?: unknown };
  if (flat?.format !== "fulgur-optimizer" || typeof flat.state !== "object" || flat.state === null) return undefined;
  const recorded = checkpoint.meta.optimizer_tensors;
  if (Array.isArray(recorded)) {
    const gone = recorded.filter((n): n is string => typeof n === "string" && !Object.hasOwn(checkpoint.tensors, n));
    if (gone.length === 0) return undefined;
    const shown = gone.slice(0, 4).join(", ") + (gone.length > 4 ? `, … (${gone.length} in all)` : "");
    return `missing: ${shown}`;
  }
  const withState = Object.keys(flat.state).length;
  return withState > 0 && found === 0 ? `state for ${plural(withState, "parameter")}, no ${OPTIMIZER_PREFIX}* tensor` : undefined;
}

export function loopPositionOf(checkpoint: Checkpoint, path: string): LoopPosition {
  const version = checkpoint.meta.trainer_checkpoint_version;
  if (version === undefined && checkpoint.meta.loop === undefined) {
    throw new Error(`checkpoint ${path} holds weights only (no trainer_checkpoint_version, no loop position), ${CANNOT_RESUME}`);
  }
  if (version !== TRAINER_CHECKPOINT_VERSION) {
    throw new Error(
      `checkpoint ${path}: trainer checkpoint version ${JSON.stringify(version)} is not supported (this Trainer reads version ${TRAINER_CHECKPOINT_VERSION})`,
    );
  }
  const loop = checkpoint.meta.loop as Partial<LoopPosition> | undefined;
  if (!loop || ![loop.epoch, loop.globalStep, loop.batchInEpoch].every((v) => Number.isInteger(v) && (v as number) >= 0)) {
    throw new Error(`checkpoint ${path}: missing or invalid loop position ${JSON.stringify(loop)}`);
  }
  return loop as LoopPosition;
}
