/**
 * Writing a sharded checkpoint for another world size, in one process, without a GPU: from a
 * sharded checkpoint (`reshardCheckpoint`) or from one safetensors file (`convertFullToSharded`,
 * convert.ts). Output rank files are written one after the other, each tensor piece copied in
 * chunks through one scratch buffer (byteSource.ts), so memory stays bounded by the largest
 * tensor (or the chunk size) however large the checkpoint. The output goes into a temporary
 * directory and is committed like a save (directoryCommit.ts), index last.
 *
 * [Note: the default layout]
 * "even" splits each tensor's flattened range into contiguous parts of ceil(numel / M) elements,
 * rank r taking [r·c, (r+1)·c) clipped to the tensor. It is packages/sharding's layout applied per
 * tensor rather than per unit (a converter does not know the units), and since every reader reads
 * by tensor and range, any layout loads at any world size: FSDP at world M reads its own segments
 * whatever the split. "whole" keeps tensors whole (what a Python user wants to pick tensors out
 * of files), each given to the rank with the fewest bytes so far, largest tensors first.
 */
import { rm } from "node:fs/promises";
import { join, resolve } from "node:path";
import { safetensorsItemsize } from "../safetensors/format";
import { BufferTracker } from "./bufferTracker";
import { assertNoPartialTensors, copyRange, scratchBytes, type ConversionSummary, type CopyOptions, type TensorByteSource } from "./byteSource";
import { assertReplaceable, commitDirectory, newSaveId, prepareTemporaryDirectory, temporaryDirectoryFor } from "./directoryCommit";
import { SHARD_LAYOUTS, rankFileName, type ShardLayoutName } from "./format";
import { assembleIndex, writeIndex } from "./indexAssembly";
import { openShardedCheckpoint } from "./reader";
import { writeRankFile, type RankPiece } from "./rankFile";

export interface ReshardOptions extends CopyOptions {
  /** The id of the temporary directory `<outDir>.tmp-<id>` (default: made fresh). */
  readonly id?: string;
}

/** Each rank's pieces under `layout` (see the note). Every tensor is declared on at least one rank, empty ones included. */
export function planLayout(source: Pick<TensorByteSource, "names" | "info">, worldSize: number, layout: ShardLayoutName): RankPiece[][] {
  if (!Number.isSafeInteger(worldSize) || worldSize < 1) throw new RangeError(`worldSize must be a positive integer, got ${worldSize}`);
  if (!SHARD_LAYOUTS.includes(layout)) throw new TypeError(`layout must be one of ${SHARD_LAYOUTS.join(", ")}, got ${JSON.stringify(layout)}`);
  const plan: RankPiece[][] = Array.from({ length: worldSize }, () => []);
  const tensors = source.names().map((name) => ({ name, ...source.info(name) }));
  if (layout === "even") {
    for (const t of tensors) {
      const c = Math.ceil(t.numel / worldSize);
      plan.forEach((pieces, r) => {
        const start = Math.min(r * c, t.numel);
        pieces.push({ name: t.name, shape: t.shape, dtype: t.dtype, start, end: Math.min(start + c, t.numel) });
      });
    }
    return plan;
  }
  const load = new Array<number>(worldSize).fill(0);
  const bytes = (t: (typeof tensors)[number]) => t.numel * safetensorsItemsize(t.dtype);
  for (const t of [...tensors].sort((a, b) => bytes(b) - bytes(a) || (a.name < b.name ? -1 : 1))) {
    const r = load.reduce((best, l, i) => (l < load[best] ? i : best), 0);
    load[r] += bytes(t);
    plan[r].push({ name: t.name, shape: t.shape, dtype: t.dtype, start: 0, end: t.numel });
  }
  return plan;
}

/**
 * Writes the tensors of `source` as a sharded checkpoint at `outDir` for `worldSize` ranks, with
 * the source's meta. Takes ownership of `source` and closes it (before the commit, so resharding a
 * checkpoint into its own directory works: the old one stays until the new one is complete).
 */
export async function writeShardedFrom(
  source: TensorByteSource,
  outDir: string,
  worldSize: number,
  layout: ShardLayoutName = "even",
  options: ReshardOptions = {},
): Promise<ConversionSummary> {
  let open = true;
  const closeSource = async () => {
    if (open) await source.close();
    open = false;
  };
  const target = resolve(outDir);
  const tracker = options.tracker ?? new BufferTracker();
  let tmp: string | undefined;
  try {
    assertNoPartialTensors(source, target);
    const plan = planLayout(source, worldSize, layout);
    await assertReplaceable(target);
    tmp = temporaryDirectoryFor(target, options.id ?? newSaveId());
    await prepareTemporaryDirectory(tmp);
    const sizes = plan.flat().map((p) => (p.end - p.start) * safetensorsItemsize(p.dtype));
    const scratch = tracker.allocate(scratchBytes(sizes.reduce((a, b) => Math.max(a, b), 0), options.chunkBytes));
    try {
      for (let r = 0; r < worldSize; r++) {
        await writeRankFile(join(tmp, rankFileName(r, worldSize)), r, worldSize, plan[r], (p, write) => copyRange(source, p.name, p.start, p.end, write, scratch));
      }
    } finally {
      tracker.release(scratch);
    }
    await writeIndex(tmp, await assembleIndex(tmp, worldSize, source.meta));
    await closeSource();
    await commitDirectory(tmp, target);
    return { tensors: source.names().length, bytes: sizes.reduce((a, b) => a + b, 0) };
  } finally {
    await closeSource().catch(() => undefined);
    // After the commit the temporary name is gone; after a failure this clears the partial output.
    if (tmp !== undefined) await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** Rewrites the sharded checkpoint `dir` for `worldSize` ranks at `outDir` (which may be `dir` itself). */
export async function reshardCheckpoint(
  dir: string,
  outDir: string,
  worldSize: number,
  layout: ShardLayoutName = "even",
  options: ReshardOptions = {},
): Promise<ConversionSummary> {
  const reader = await openShardedCheckpoint(dir, { tracker: options.tracker });
  return writeShardedFrom(reader, outDir, worldSize, layout, options);
}
