/** Reading and writing checkpoints. Checkpoints are data, never code (DESIGN.md, decision 9). */
import type { Tensor } from "@fulgur/tensor";
import type { ContractVersioned } from "./plugin";

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
