/**
 * What the converters copy from: tensors as names, shapes, dtypes and byte ranges, whether they
 * live in a sharded checkpoint (the reader) or in one safetensors file (a full checkpoint, or any
 * safetensors file). Copying goes through one scratch buffer, reused for every chunk of every
 * tensor, so a conversion holds at most that buffer's bytes of tensor data at a time: the smaller
 * of the largest tensor and the chunk size.
 */
import type { CheckpointMeta } from "@fulgur/core";
import type { WriteChunk } from "../atomicFile";
import { decodeFullCheckpointMetadata } from "../fullCheckpointIO";
import { safetensorsItemsize, type SafetensorsDType } from "../safetensors/format";
import type { BufferTracker } from "./bufferTracker";
import { numelOf } from "./format";
import { RangedSafetensorsFile } from "./rangeFile";

export interface TensorByteSource {
  readonly meta: CheckpointMeta;
  names(): string[];
  info(name: string): { readonly shape: readonly number[]; readonly dtype: SafetensorsDType; readonly numel: number; readonly partial: boolean };
  /** Elements [start, end) of `name`, flattened, into `into` (exactly their bytes long). */
  readInto(name: string, start: number, end: number, into: Uint8Array): Promise<void>;
  close(): Promise<void>;
}

/** The default chunk: large enough that per-read overhead vanishes, small beside any real host. */
export const DEFAULT_CHUNK_BYTES = 64 * 1024 * 1024;

export interface CopyOptions {
  /** The most tensor bytes copied at once (default 64 MiB); memory is bounded by this or the largest tensor, whichever is smaller. */
  readonly chunkBytes?: number;
  /** Counts the buffers allocated and the bytes read. */
  readonly tracker?: BufferTracker;
}

/** The scratch buffer's size for copies of at most `largestBytes` at a time. */
export function scratchBytes(largestBytes: number, chunkBytes = DEFAULT_CHUNK_BYTES): number {
  if (!Number.isSafeInteger(chunkBytes) || chunkBytes < 8) throw new RangeError(`chunkBytes must be an integer of at least 8, got ${chunkBytes}`);
  // A multiple of 8 holds whole elements of every dtype.
  return Math.max(8, Math.min(largestBytes, chunkBytes - (chunkBytes % 8)));
}

/** Copies elements [start, end) of `name` from `source` through `write`, a scratch-buffer's worth at a time. */
export async function copyRange(source: TensorByteSource, name: string, start: number, end: number, write: WriteChunk, scratch: Uint8Array): Promise<void> {
  const item = safetensorsItemsize(source.info(name).dtype);
  const per = Math.floor(scratch.length / item);
  for (let s = start; s < end; s += per) {
    const e = Math.min(end, s + per);
    const chunk = scratch.subarray(0, (e - s) * item);
    await source.readInto(name, s, e, chunk);
    // The write is awaited before the next read overwrites the scratch buffer.
    await write(chunk);
  }
}

/** A single safetensors file as a source; its meta is a full checkpoint's (`{}` for a plain file). */
export async function openFullFileSource(path: string, tracker?: BufferTracker): Promise<TensorByteSource> {
  const file = await RangedSafetensorsFile.open(path, tracker);
  try {
    const meta = decodeFullCheckpointMetadata(file.header.metadata, path);
    const entry = (name: string) => {
      const e = file.entry(name);
      if (!e) throw new RangeError(`${path}: no tensor named ${JSON.stringify(name)}`);
      return e;
    };
    return {
      meta,
      names: () => file.header.tensors.map((t) => t.name).sort(),
      info: (name) => {
        const e = entry(name);
        return { shape: e.shape, dtype: e.dtype, numel: numelOf(e.shape), partial: false };
      },
      readInto: (name, start, end, into) => file.readElements(entry(name), start, end, into),
      close: () => file.close(),
    };
  } catch (e) {
    await file.close();
    throw e;
  }
}

/** Conversions write whole tensors: refuses a source with partial ones, naming them. */
export function assertNoPartialTensors(source: TensorByteSource, label: string): void {
  const partial = source.names().filter((n) => source.info(n).partial);
  if (partial.length > 0) {
    throw new Error(`${label}: cannot convert partial tensors (some of their elements are in no piece): ${partial.slice(0, 5).map((n) => JSON.stringify(n)).join(", ")}${partial.length > 5 ? ", ..." : ""}`);
  }
}

/** What a conversion wrote. */
export interface ConversionSummary {
  readonly tensors: number;
  /** Tensor bytes written (headers not counted). */
  readonly bytes: number;
}
