/**
 * Writing one rank's file of a sharded checkpoint: the pieces that rank holds, as plain
 * safetensors (Python reads it as is), with a description of them in `__metadata__`. The
 * description is what the coordinating rank builds the index from, so ranks never have to send
 * each other their piece lists: each file says what it holds, and a file exists under its final
 * name only once it is complete (written atomically, like every file of this package).
 *
 * Stored keys are the tensor's name when the rank holds one piece of it (the FSDP case: one
 * contiguous segment per parameter), and `name@start-end` when it holds several. The index records
 * each key, so readers never derive one.
 */
import { basename } from "node:path";
import { writeFileAtomic, type WriteChunk } from "../atomicFile";
import { encodeHeader, hasOwn, layoutOrder, safetensorsItemsize, setOwn, type SafetensorsDType } from "../safetensors/format";
import { RANK_DESCRIPTION_KEY, RANK_FILE_FORMAT, SHARDED_FORMAT_VERSION, numelOf, type PieceEntry, type RankDescription, type ShardedTensorEntry } from "./format";

/** A piece as a writer describes it: elements [start, end) of tensor `name`, flattened. */
export interface RankPiece {
  readonly name: string;
  /** The whole tensor's shape. */
  readonly shape: readonly number[];
  readonly dtype: SafetensorsDType;
  readonly start: number;
  readonly end: number;
  /** The tensor's pieces on all ranks together need not cover it. */
  readonly partial?: boolean;
}

const sameShape = (a: readonly number[], b: readonly number[]) => a.length === b.length && a.every((d, i) => d === b[i]);

/**
 * Writes `pieces` to `path` for rank `rank` of `worldSize`. Empty pieces (start = end) store
 * nothing but still declare the tensor, so a tensor of no elements reaches the index. `produce`
 * writes one piece's bytes (little-endian, row-major, exactly (end - start) × itemsize of them),
 * in as many chunks as it likes; pieces are produced one at a time, in file order.
 */
export async function writeRankFile<P extends RankPiece>(
  path: string,
  rank: number,
  worldSize: number,
  pieces: readonly P[],
  produce: (piece: P, write: WriteChunk) => Promise<void>,
): Promise<void> {
  const file = basename(path);
  const tensors: Record<string, { dtype: SafetensorsDType; shape: readonly number[]; partial?: boolean; pieces: P[] }> = {};
  for (const p of pieces) {
    const known = hasOwn(tensors, p.name) ? tensors[p.name] : undefined;
    if (known && (known.dtype !== p.dtype || !sameShape(known.shape, p.shape))) {
      throw new TypeError(`${path}: tensor ${JSON.stringify(p.name)} is given as ${known.dtype} [${known.shape.join(", ")}] and as ${p.dtype} [${p.shape.join(", ")}]`);
    }
    const t = known ?? { dtype: p.dtype, shape: p.shape, pieces: [] };
    if (p.partial) t.partial = true;
    if (p.end > p.start) t.pieces.push(p);
    if (!known) setOwn(tensors, p.name, t);
  }

  const stored: { name: string; dtype: SafetensorsDType; shape: readonly number[]; piece: P }[] = [];
  const description: Record<string, ShardedTensorEntry> = {};
  const keyOwner = new Map<string, string>();
  for (const [name, t] of Object.entries(tensors)) {
    const numel = numelOf(t.shape);
    const entries: PieceEntry[] = t.pieces.map((p) => {
      const key = t.pieces.length === 1 ? name : `${name}@${p.start}-${p.end}`;
      const clash = keyOwner.get(key);
      if (clash !== undefined) throw new TypeError(`${path}: pieces of ${JSON.stringify(clash)} and ${JSON.stringify(name)} would both be stored as ${JSON.stringify(key)}`);
      keyOwner.set(key, name);
      const whole = p.start === 0 && p.end === numel;
      stored.push({ name: key, dtype: t.dtype, shape: whole ? t.shape : [p.end - p.start], piece: p });
      return { file, key, start: p.start, end: p.end };
    });
    setOwn(description, name, { dtype: t.dtype, shape: [...t.shape], ...(t.partial ? { partial: true } : {}), pieces: entries });
  }

  const self: RankDescription = { rank, world_size: worldSize, tensors: description };
  const metadata = {
    format: RANK_FILE_FORMAT,
    format_version: String(SHARDED_FORMAT_VERSION),
    [RANK_DESCRIPTION_KEY]: JSON.stringify(self),
  };
  const ordered = layoutOrder(stored);
  // Built before the file is opened, so a bad name, dtype or shape never creates a temporary file.
  const { prefix } = encodeHeader(ordered, metadata, path);
  await writeFileAtomic(path, async (write) => {
    await write(prefix);
    for (const s of ordered) {
      const expected = (s.piece.end - s.piece.start) * safetensorsItemsize(s.dtype);
      let written = 0;
      await produce(s.piece, async (chunk) => {
        written += chunk.length;
        if (written > expected) throw new RangeError(`${path}: piece [${s.piece.start}, ${s.piece.end}) of ${JSON.stringify(s.piece.name)} got more than its ${expected} bytes`);
        await write(chunk);
      });
      if (written !== expected) {
        throw new RangeError(`${path}: piece [${s.piece.start}, ${s.piece.end}) of ${JSON.stringify(s.piece.name)} got ${written} bytes, needs ${expected}`);
      }
    }
  });
}
