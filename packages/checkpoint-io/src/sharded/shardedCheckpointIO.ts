/**
 * ShardedCheckpointIO: the core CheckpointIO contract over the sharded format, so a strategy can
 * hand it to the Trainer like any other checkpoint IO. Unlike the full format, `save` is called on
 * every rank (each contributes its pieces); `load` and `remove` are local.
 *
 * [Note: describing pieces in a Checkpoint]
 * A Checkpoint is `{ tensors, meta }`, tensors by flat name. A rank says which of its tensors are
 * pieces of a larger tensor in `meta.sharded_pieces` (SHARDED_PIECES_KEY), keyed by the tensor's
 * key in `tensors`:
 *
 *     tensors: { "state_dict.w#1": <2 × 8 elements> },
 *     meta: { step: 10, sharded_pieces: { "state_dict.w#1": { name: "state_dict.w", shape: [8, 8], start: 16, end: 32 } } }
 *
 * The key is the rank's own business (it only has to be unique in `tensors`); `name` is the
 * tensor's name in the checkpoint, `shape` its whole shape, [start, end) the flattened range this
 * rank holds; `partial: true` declares that the ranks' pieces need not cover it. A tensor not
 * described there is whole and replicated: rank 0 saves it, other ranks' copies are not written
 * (as BaseStrategy saves replicated state from rank 0 only). `meta` without `sharded_pieces` is
 * taken from rank 0 and stored in the index. `load` returns whole tensors by name (for small
 * models and tests; a sharded strategy reads its own ranges through openShardedCheckpoint).
 */
import { CONTRACT_VERSION, type Checkpoint, type CheckpointIO, type CheckpointMeta } from "@fulgur/core";
import type { Tensor } from "@fulgur/tensor";
import { readdir, rm, rmdir, stat } from "node:fs/promises";
import { join, resolve } from "node:path";
import { assertCheckpoint } from "../fullCheckpointIO";
import { hasOwn, setOwn } from "../safetensors/format";
import { assertShardedCheckpointDirectory } from "./directoryCommit";
import { INDEX_FILE, RANK_FILE_NAME, numelOf } from "./format";
import { openShardedCheckpoint } from "./reader";
import { ShardedCheckpointWriter, type ShardCoordinator, type ShardPiece } from "./writer";

export const SHARDED_PIECES_KEY = "sharded_pieces";

/** One entry of `meta.sharded_pieces`: the tensor stored under this key is elements [start, end) of tensor `name`. */
export interface PieceDescription {
  readonly name: string;
  /** The whole tensor's shape. */
  readonly shape: readonly number[];
  readonly start: number;
  readonly end: number;
  readonly partial?: boolean;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** The meta stored in the index: the checkpoint's, without the pieces (they are per rank). */
function storedMeta(checkpoint: Checkpoint): CheckpointMeta {
  // A malformed checkpoint is reported by piecesOf, inside the save, so the rank still takes part in every collective.
  if (!isObject(checkpoint?.meta)) return {};
  const { [SHARDED_PIECES_KEY]: _pieces, ...rest } = checkpoint.meta;
  return rest;
}

/** This rank's pieces of the checkpoint, by the convention of the note. */
function piecesOf(checkpoint: Checkpoint, rank: number): ShardPiece[] {
  assertCheckpoint(checkpoint);
  const described = checkpoint.meta[SHARDED_PIECES_KEY] ?? {};
  const field = `checkpoint.meta.${SHARDED_PIECES_KEY}`;
  if (!isObject(described)) throw new TypeError(`${field} must be an object of piece descriptions by tensor key`);
  for (const key of Object.keys(described)) {
    if (!hasOwn(checkpoint.tensors, key)) throw new TypeError(`${field} describes ${JSON.stringify(key)}, which checkpoint.tensors does not hold`);
  }
  const pieces: ShardPiece[] = [];
  for (const [key, tensor] of Object.entries(checkpoint.tensors)) {
    const d = hasOwn(described, key) ? described[key] : undefined;
    if (d === undefined) {
      if (rank === 0) pieces.push({ name: key, globalShape: tensor.shape, dtype: tensor.dtype, start: 0, end: numelOf(tensor.shape), tensor });
      continue;
    }
    if (!isObject(d)) throw new TypeError(`${field}[${JSON.stringify(key)}] must be { name, shape, start, end, partial? }`);
    const { name, shape, start, end, partial } = d as Partial<PieceDescription>;
    pieces.push({ name: name as string, globalShape: shape as number[], dtype: tensor.dtype, start: start as number, end: end as number, tensor, partial });
  }
  return pieces;
}

/** What of one tensor to read: null skips it, undefined reads it whole, a range reads those elements of it flattened. */
export type TensorPart = { readonly start: number; readonly end: number } | null | undefined;

export interface ShardedLoadOptions {
  /** Where the tensors go (default: the CPU). */
  readonly device?: string;
  /** What of each tensor to read, by name (default: all of every one). */
  readonly part?: (name: string) => TensorPart;
}

/**
 * Reads a sharded checkpoint written at any world size, whole or as a rank that holds parts of the
 * model does (FSDP, a pipeline stage): only its ranges of the tensors it shards, the tensors it
 * does not hold skipped, the rest whole. What was read is disposed if a later tensor fails.
 */
export async function loadShardedCheckpoint(path: string, options: ShardedLoadOptions = {}): Promise<Checkpoint> {
  const reader = await openShardedCheckpoint(path);
  const tensors: Record<string, Tensor> = {};
  try {
    for (const name of reader.names()) {
      const part = options.part?.(name);
      if (part === null) continue;
      setOwn(tensors, name, await reader.read(name, part?.start, part?.end, { device: options.device }));
    }
    return { tensors, meta: reader.meta };
  } catch (e) {
    for (const t of Object.values(tensors)) t.dispose();
    throw e;
  } finally {
    await reader.close();
  }
}

export class ShardedCheckpointIO implements CheckpointIO {
  readonly name = "sharded";
  readonly contractVersion = CONTRACT_VERSION;
  private readonly writer: ShardedCheckpointWriter;

  constructor(readonly coordinator: ShardCoordinator) {
    this.writer = new ShardedCheckpointWriter(coordinator);
  }

  /** Called on every rank with that rank's tensors (see the note); `path` is the checkpoint directory. */
  async save(checkpoint: Checkpoint, path: string): Promise<void> {
    await this.writer.writeWith(path, () => piecesOf(checkpoint, this.coordinator.rank), storedMeta(checkpoint));
  }

  /** Every tensor whole by default, by name, on `device`; fails naming a partial tensor. See `loadShardedCheckpoint`. */
  async load(path: string, options: ShardedLoadOptions = {}): Promise<Checkpoint> {
    return loadShardedCheckpoint(path, options);
  }

  /**
   * Deletes the checkpoint directory, called on one rank. Only a directory holding nothing but a
   * sharded checkpoint's files is removed (index.json first, so it stops looking complete at once);
   * anything else is refused. A missing path is not an error (the goal is that it is gone).
   */
  async remove(path: string): Promise<void> {
    const target = resolve(path);
    if (!(await stat(target).catch(() => undefined))) return;
    await assertShardedCheckpointDirectory(target, "remove");
    await rm(join(target, INDEX_FILE), { force: true });
    for (const name of await readdir(target)) if (RANK_FILE_NAME.test(name)) await rm(join(target, name), { force: true });
    await rmdir(target);
  }
}
