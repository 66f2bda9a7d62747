/** Reading and writing checkpoints. Checkpoints are data, never code (DESIGN.md, decision 9). */
import type { Tensor } from "@fulgur/tensor";
import type { ContractVersioned } from "./plugin";

/**
 * How a Trainer checkpoint names its tensors: the module's state under `state_dict.<name>`, the
 * optimizer's under `optimizer.<name>` (its layout in `meta.optimizer`). Strategies and tools that
 * read or write checkpoints themselves use the same names.
 */
export const MODEL_PREFIX = "state_dict.";
export const OPTIMIZER_PREFIX = "optimizer.";

/** JSON-compatible values stored beside the tensors: step, epoch, RNG state, hyper-parameters. */
export type CheckpointMeta = { [key: string]: unknown };

export interface Checkpoint {
  /** Every tensor by a flat, dotted name ("model.blocks.0.qkv.weight", "optimizer.state.3.exp_avg"). */
  readonly tensors: Record<string, Tensor>;
  readonly meta: CheckpointMeta;
}

export interface CheckpointIO extends ContractVersioned {
  readonly name: string;
  /** Writes to a temporary name and renames it into place only when complete. */
  save(checkpoint: Checkpoint, path: string): Promise<void>;
  load(path: string, options?: { device?: string }): Promise<Checkpoint>;
  remove(path: string): Promise<void>;
}
