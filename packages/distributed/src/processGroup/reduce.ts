/**
 * Element-wise reductions on host arrays, for every dtype the tensor engine has.
 *
 * Reductions run in an accumulator format, not the storage format: float32 for float32, bfloat16
 * and float16 (the "fp32 reductions" of mixed precision: a 16-bit value is decoded once, summed in
 * float32 across every hop of the ring, and rounded to nearest-even exactly once at the end),
 * float64 for float64 and int32 (wrapping, like PyTorch) for int32. Partial sums travel between
 * ranks in the accumulator format for the same reason.
 */
import { allocHost, bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from "@fulgur/tensor";
import type { DType, HostArray } from "@fulgur/tensor";
import type { ReduceOp } from "@fulgur/core";

export type Accumulator = Float32Array | Float64Array | Int32Array;

export const REDUCE_OPS: readonly ReduceOp[] = ["sum", "avg", "max", "min"];

/** A zeroed array of `n` elements in `dtype`'s storage format (the tensor package's allocHost). */
export const allocStorage = allocHost;

/** Allocates a zeroed accumulator for `n` elements of `dtype`. */
export function allocAccumulator(dtype: DType, n: number): Accumulator {
  if (dtype === "float64") return new Float64Array(n);
  if (dtype === "int32") return new Int32Array(n);
  return new Float32Array(n);
}

/** Decodes `src[start, end)` (storage format) into a fresh accumulator. */
export function toAccumulator(dtype: DType, src: HostArray, start = 0, end = src.length): Accumulator {
  const n = end - start;
  const out = allocAccumulator(dtype, n);
  if (dtype === "bfloat16") for (let i = 0; i < n; i++) out[i] = bf16BitsToF32(src[start + i]);
  else if (dtype === "float16") for (let i = 0; i < n; i++) out[i] = f16BitsToF32(src[start + i]);
  else out.set(src.subarray(start, end) as ArrayLike<number>);
  return out;
}

/** acc[i] = acc[i] (op) incoming[i]; avg accumulates like sum and divides in `finish`. */
export function accumulate(op: ReduceOp, acc: Accumulator, incoming: Accumulator): void {
  const n = acc.length;
  if (incoming.length !== n) throw new RangeError(`accumulate: ${incoming.length} incoming elements for ${n}`);
  switch (op) {
    case "sum":
    case "avg":
      // Typed-array stores round float32 and wrap int32, exactly the storage semantics we want.
      for (let i = 0; i < n; i++) acc[i] += incoming[i];
      return;
    case "max":
      for (let i = 0; i < n; i++) acc[i] = Math.max(acc[i], incoming[i]);
      return;
    case "min":
      for (let i = 0; i < n; i++) acc[i] = Math.min(acc[i], incoming[i]);
      return;
  }
}

/**
 * Turns a finished accumulator into storage format: divides by `count` for avg (truncating toward
 * zero for int32), then rounds 16-bit floats to nearest-even.
 */
export function finish(dtype: DType, op: ReduceOp, acc: Accumulator, count: number): HostArray {
  if (op === "avg") for (let i = 0; i < acc.length; i++) acc[i] = acc[i] / count;
  if (dtype === "bfloat16") {
    const out = new Uint16Array(acc.length);
    for (let i = 0; i < acc.length; i++) out[i] = f32ToBf16Bits(acc[i]);
    return out;
  }
  if (dtype === "float16") {
    const out = new Uint16Array(acc.length);
    for (let i = 0; i < acc.length; i++) out[i] = f32ToF16Bits(acc[i]);
    return out;
  }
  return acc;
}

/**
 * Reduces whole contributions given in group-rank order: the order every rank uses, so every rank
 * gets bitwise the same result from the same inputs.
 */
export function reduceInOrder(dtype: DType, op: ReduceOp, contributions: readonly HostArray[]): HostArray {
  const acc = toAccumulator(dtype, contributions[0]);
  for (let r = 1; r < contributions.length; r++) accumulate(op, acc, toAccumulator(dtype, contributions[r]));
  return finish(dtype, op, acc, contributions.length);
}

/** A byte view of a typed array (no copy), for sending. */
export function asBytes(a: HostArray | Accumulator): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

type ArrayKind = "float32" | "float64" | "int32" | "uint16";

/** The typed-array kind a dtype is stored in on the host. */
export function storageKind(dtype: DType): ArrayKind {
  return dtype === "bfloat16" || dtype === "float16" ? "uint16" : dtype;
}

/** The typed-array kind partial reductions of a dtype travel in. */
export function accumulatorKind(dtype: DType): ArrayKind {
  return dtype === "float64" ? "float64" : dtype === "int32" ? "int32" : "float32";
}

const BYTES: Record<ArrayKind, number> = { float32: 4, float64: 8, int32: 4, uint16: 2 };

export function bytesPerElement(kind: ArrayKind): number {
  return BYTES[kind];
}

/**
 * Copies received bytes into a fresh, aligned typed array of `kind`. Received buffers are slices
 * of socket reads at arbitrary offsets, which typed arrays of wider elements cannot view directly.
 * Hosts are assumed little-endian (every platform Node ships for is).
 */
export function fromBytes(kind: ArrayKind, bytes: Uint8Array): HostArray {
  const size = BYTES[kind];
  if (bytes.byteLength % size !== 0) throw new RangeError(`${bytes.byteLength} bytes is not a whole number of ${kind} elements`);
  const n = bytes.byteLength / size;
  const out =
    kind === "float32"
      ? new Float32Array(n)
      : kind === "float64"
        ? new Float64Array(n)
        : kind === "int32"
          ? new Int32Array(n)
          : new Uint16Array(n);
  new Uint8Array(out.buffer).set(bytes);
  return out;
}

/** Element boundaries of `parts` near-equal chunks of `n` elements (the first `n % parts` get one more). */
export function chunkBounds(n: number, parts: number): number[] {
  const base = Math.floor(n / parts);
  const extra = n % parts;
  const bounds = [0];
  for (let i = 0; i < parts; i++) bounds.push(bounds[i] + base + (i < extra ? 1 : 0));
  return bounds;
}
