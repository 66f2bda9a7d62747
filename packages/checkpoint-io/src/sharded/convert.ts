/**
 * Converting between the sharded and the full format, streaming, in one process, without a GPU.
 * Sharded to full writes the header first, computed from the index's shapes and dtypes alone, then
 * each tensor's bytes in file order, assembled from its pieces a chunk at a time (byteSource.ts):
 * the output never exists in memory, whatever the checkpoint's size. The result is a full
 * checkpoint (format "fulgur.full", the same meta) that FullCheckpointIO and Python load, written
 * atomically (temporary name, then rename). Full to sharded is a reshard from one file.
 */
import { writeFileAtomic } from "../atomicFile";
import { encodeFullCheckpointMetadata } from "../fullCheckpointIO";
import { encodeHeader, layoutOrder, safetensorsItemsize } from "../safetensors/format";
import { BufferTracker } from "./bufferTracker";
import { assertNoPartialTensors, copyRange, openFullFileSource, scratchBytes, type ConversionSummary, type CopyOptions } from "./byteSource";
import type { ShardLayoutName } from "./format";
import { openShardedCheckpoint } from "./reader";
import { writeShardedFrom, type ReshardOptions } from "./reshard";

/** Writes the sharded checkpoint in directory `dir` as one full-checkpoint safetensors file `file`. */
export async function convertShardedToFull(dir: string, file: string, options: CopyOptions = {}): Promise<ConversionSummary> {
  const tracker = options.tracker ?? new BufferTracker();
  const reader = await openShardedCheckpoint(dir, { tracker });
  try {
    assertNoPartialTensors(reader, reader.path);
    const tensors = layoutOrder(reader.names().map((name) => reader.info(name)));
    const { prefix } = encodeHeader(tensors, encodeFullCheckpointMetadata(reader.meta), file);
    const sizes = tensors.map((t) => t.numel * safetensorsItemsize(t.dtype));
    const scratch = tracker.allocate(scratchBytes(sizes.reduce((a, b) => Math.max(a, b), 0), options.chunkBytes));
    try {
      await writeFileAtomic(file, async (write) => {
        await write(prefix);
        for (const t of tensors) await copyRange(reader, t.name, 0, t.numel, write, scratch);
      });
    } finally {
      tracker.release(scratch);
    }
    return { tensors: tensors.length, bytes: sizes.reduce((a, b) => a + b, 0) };
  } finally {
    await reader.close();
  }
}

/**
 * Writes the safetensors file `file` (a full checkpoint, or any safetensors file: its dtypes move
 * as bytes) as a sharded checkpoint at `outDir` for `worldSize` ranks.
 */
export async function convertFullToSharded(
  file: string,
  outDir: string,
  worldSize: number,
  layout: ShardLayoutName = "even",
  options: ReshardOptions = {},
): Promise<ConversionSummary> {
  return writeShardedFrom(await openFullFileSource(file, options.tracker), outDir, worldSize, layout, options);
}
