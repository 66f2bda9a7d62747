/**
 * What a Trainer checkpoint holds and how it is restored: the module's state, the optimizer's
 * tensors (by flat name) and, as JSON metadata, the loop position (epoch, step, batch within the
 * epoch), the optimizer's scalars, the scheduler, the loss scaler, the random state and the
 * callbacks' state. Resuming from it continues exactly where the run stopped.
 */
import type { Checkpoint, CheckpointMeta, OptimizerState } from "@fulgur/core";
import { type LRScheduler, type Optimizer, flattenOptimizerState, unflattenOptimizerState } from "@fulgur/nn";
import type { Tensor } from "@fulgur/tensor";

export const MODEL_PREFIX = "state_dict.";
export const OPTIMIZER_PREFIX = "optimizer.";
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

/** The optimizer state a checkpoint holds (tensors by flat name without the prefix, and its meta). */
export function optimizerStateOf(checkpoint: Checkpoint, path: string): OptimizerState {
  const meta = checkpoint.meta.optimizer;
  if (meta === undefined) throw new Error(`checkpoint ${path} has no optimizer state; resume needs a checkpoint saved by Trainer.fit`);
  const tensors: Record<string, Tensor> = {};
  for (const [k, v] of Object.entries(checkpoint.tensors)) if (k.startsWith(OPTIMIZER_PREFIX)) tensors[k.slice(OPTIMIZER_PREFIX.length)] = v;
  return { tensors, meta: meta as CheckpointMeta };
}

/** The fallback when the strategy does not handle optimizer state: the optimizer's own state dict, flattened. */
export function flatOptimizerState(optimizer: Optimizer): OptimizerState {
  const flat = flattenOptimizerState(optimizer.stateDict());
  return { tensors: flat.tensors, meta: flat.meta as unknown as CheckpointMeta };
}

export function loadFlatOptimizerState(optimizer: Optimizer, state: OptimizerState): void {
  optimizer.loadStateDict(unflattenOptimizerState(state.tensors, state.meta as never));
}

export function loopPositionOf(checkpoint: Checkpoint, path: string): LoopPosition {
  const version = checkpoint.meta.trainer_checkpoint_version;
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
