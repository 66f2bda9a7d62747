/**
 * What the main thread sends a CPU optimizer worker, and how either side runs its share: tensors as
 * (buffer, dtype, offset) triples into SharedArrayBuffers, and pieces (a tensor's element range).
 */
import type { AdamWHyper } from "../backend";
import type { DType, HostArray } from "../dtype";
import { type HostRange, adamwRange } from "./adamw";

export interface SharedRange {
  /** Index into the job's buffers. */
  readonly buffer: number;
  readonly dtype: DType;
  readonly offset: number;
}

export interface AdamWTensor {
  readonly p: SharedRange;
  readonly g: SharedRange;
  readonly m: SharedRange;
  readonly v: SharedRange;
  readonly lp: SharedRange | null;
}

export interface Piece {
  readonly tensor: number;
  readonly start: number;
  readonly count: number;
}

export interface AdamWJob {
  readonly buffers: readonly SharedArrayBuffer[];
  readonly tensors: readonly AdamWTensor[];
  readonly pieces: readonly Piece[];
  readonly hyper: AdamWHyper;
  /** Int32 [done, failed] then 2 KiB of UTF-8 error text. */
  readonly control: SharedArrayBuffer;
}

/**
 * A sum a worker adds in place: `dst[start, start + count) += src[start, start + count)`, fp32
 * ranges of shared buffers (the sharding engine's later micro-batches' offloaded gradients, added
 * into the gradient slice beside backward).
 */
export interface AddJob {
  readonly kind: "add";
  readonly buffers: readonly SharedArrayBuffer[];
  readonly dst: SharedRange;
  readonly src: SharedRange;
  readonly start: number;
  readonly count: number;
  /** As AdamWJob's. */
  readonly control: SharedArrayBuffer;
}

/** Runs an add job's range. */
export function runAdd(job: Omit<AddJob, "control">): void {
  const dst = new Float32Array(job.buffers[job.dst.buffer]);
  const src = new Float32Array(job.buffers[job.src.buffer]);
  const d = job.dst.offset + job.start;
  const s = job.src.offset + job.start;
  for (let i = 0; i < job.count; i++) dst[d + i] += src[s + i];
}

function arrayOf(buffer: SharedArrayBuffer, dtype: DType): HostArray {
  switch (dtype) {
    case "float32":
      return new Float32Array(buffer);
    case "float64":
      return new Float64Array(buffer);
    case "int32":
      return new Int32Array(buffer);
    case "bfloat16":
    case "float16":
      return new Uint16Array(buffer);
  }
}

/** Runs a job's pieces: each is `adamwRange` on a range of one tensor. */
export function runPieces(job: Omit<AdamWJob, "control">): void {
  const arrays = new Map<string, HostArray>();
  const range = (r: SharedRange, start: number): HostRange => {
    const key = `${r.buffer}/${r.dtype}`;
    let data = arrays.get(key);
    if (!data) arrays.set(key, (data = arrayOf(job.buffers[r.buffer], r.dtype)));
    return { data, dtype: r.dtype, offset: r.offset + start };
  };
  for (const { tensor, start, count } of job.pieces) {
    const t = job.tensors[tensor];
    adamwRange(range(t.p, start), range(t.g, start), range(t.m, start), range(t.v, start), count, job.hyper, t.lp ? range(t.lp, start) : null);
  }
}
