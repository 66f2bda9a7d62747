/**
 * The sharded checkpoint format (DESIGN.md decisions 9 and 15): names, constants and the shape of
 * `index.json`, shared by the writer, the reader and the converters.
 *
 * [Note: the sharded layout]
 * A sharded checkpoint is a directory:
 *
 *     index.json                        format, version, the writing world size, every tensor's
 *                                       global shape, dtype and pieces, the checkpoint's meta
 *     rank-00000-of-00004.safetensors   what rank 0 held: plain safetensors, readable by Python
 *     ...
 *
 * A piece is a flattened range [start, end) of one tensor, stored under `key` in one rank file:
 * with the tensor's own shape when the piece is the whole tensor (so Python sees ordinary tensors
 * wherever it can), as a 1-D run of end - start elements otherwise. This is how FSDP lays a
 * unit's parameters out (packages/sharding/src/layout.ts: each rank holds ranges of parameters),
 * and naming pieces by tensor and range, never by rank, is what lets any world size read any
 * other's. The index is written last, after every rank file is complete, and the directory is
 * renamed into place after that: a directory without index.json is an unfinished save, never a
 * checkpoint.
 *
 * Dtypes are safetensors names ("F32", "BF16") so converters move any safetensors dtype as bytes;
 * loading into Fulgur tensors maps them as the full format does.
 */
import type { CheckpointMeta } from "@fulgur/core";
import type { SafetensorsDType } from "../safetensors/format";

export const SHARDED_FORMAT = "fulgur-sharded";
export const SHARDED_FORMAT_VERSION = 1;
export const INDEX_FILE = "index.json";

/**
 * `__metadata__` of a rank file: its own format name (so the full loader refuses it by name
 * instead of loading a fragment as a model) and, under RANK_DESCRIPTION_KEY, JSON of what the
 * rank wrote in the index's own terms. The coordinating rank builds the index from these.
 */
export const RANK_FILE_FORMAT = "fulgur-sharded-rank";
export const RANK_DESCRIPTION_KEY = "fulgur_sharded";

/** One stored piece: elements [start, end) of the tensor, flattened, under `key` in `file`. */
export interface PieceEntry {
  readonly file: string;
  readonly key: string;
  readonly start: number;
  readonly end: number;
}

export interface ShardedTensorEntry {
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  /** The pieces need not cover the tensor (declared by the writer); reads of a gap fail. */
  readonly partial?: boolean;
  /** Sorted by start, non-empty, not overlapping; covering [0, numel) unless partial. */
  readonly pieces: readonly PieceEntry[];
}

/** index.json, as stored (snake_case, like safetensors' own `data_offsets`). */
export interface ShardedIndex {
  readonly format: typeof SHARDED_FORMAT;
  readonly version: typeof SHARDED_FORMAT_VERSION;
  readonly world_size: number;
  /** One file per writing rank, in rank order. */
  readonly files: readonly string[];
  readonly tensors: Readonly<Record<string, ShardedTensorEntry>>;
  readonly meta: CheckpointMeta;
}

/** What a rank file says about itself (RANK_DESCRIPTION_KEY): the index's tensors, this file's pieces only. */
export interface RankDescription {
  readonly rank: number;
  readonly world_size: number;
  readonly tensors: Readonly<Record<string, ShardedTensorEntry>>;
}

/** How converters lay tensors out over a new world size. */
export type ShardLayoutName =
  /** Each tensor's flattened range split into contiguous, nearly equal parts, one per rank. */
  | "even"
  /** Whole tensors, each given to the rank with the fewest bytes so far, largest first. */
  | "whole";

export const SHARD_LAYOUTS: readonly ShardLayoutName[] = ["even", "whole"];

/** `rank-00002-of-00004.safetensors`: sorts in rank order and says the world size at a glance. */
export function rankFileName(rank: number, worldSize: number): string {
  const pad = (n: number) => String(n).padStart(5, "0");
  return `rank-${pad(rank)}-of-${pad(worldSize)}.safetensors`;
}

/** Exactly the names rankFileName makes; what `remove` and tools may treat as part of a checkpoint. */
export const RANK_FILE_NAME = /^rank-\d{5,}-of-\d{5,}\.safetensors$/;

export function numelOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * The index as written: tensors sorted by name (the same checkpoint gives the same bytes), one line
 * per piece, so a person reading it with `cat` sees where every tensor lives.
 */
export function encodeIndex(index: ShardedIndex): string {
  const j = (v: unknown) => JSON.stringify(v);
  const tensors = Object.keys(index.tensors)
    .sort()
    .map((name) => {
      const { pieces, ...rest } = index.tensors[name];
      const head = `    ${j(name)}: ${j(rest).slice(0, -1)},"pieces":[`;
      return pieces.length === 0 ? `${head}]}` : `${head}\n${pieces.map((p) => `      ${j(p)}`).join(",\n")}\n    ]}`;
    });
  return [
    "{",
    `  "format": ${j(index.format)},`,
    `  "version": ${j(index.version)},`,
    `  "world_size": ${j(index.world_size)},`,
    `  "files": ${j(index.files)},`,
    `  "tensors": {${tensors.length > 0 ? `\n${tensors.join(",\n")}\n  ` : ""}},`,
    `  "meta": ${JSON.stringify(index.meta, null, 2).replace(/\n/g, "\n  ")}`,
    "}",
    "",
  ].join("\n");
}
