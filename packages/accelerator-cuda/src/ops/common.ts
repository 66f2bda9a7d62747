/**
 * What every op family shares: launch geometry for grid-stride kernels, and temporaries for views
 * whose layout a kernel does not handle (copied to a contiguous block first, or computed into one
 * and copied out). Temporaries come from the same stream-ordered pool and are freed right after the
 * kernels that use them are queued: the free is ordered after those kernels on the stream.
 */
import type { DType, View } from "@fulgur/tensor";
import type { CudaBackend } from "../cudaBackend";
import type { CudaStorage } from "../storage";
import { ptrOf } from "../storage";
import type { Ptr } from "../ffi/cudart";
import { DTYPE_CODE } from "./dtypes";
import { contiguousStrides, isContiguous, numelOf, rowsOf } from "./layout";

export const THREADS = 256;

/**
 * Runs `fn` with a host-built table of work items (chunks for multi-tensor kernels) uploaded to the
 * device through the staging ring; the table is freed after the kernels `fn` queued (the free is
 * stream-ordered).
 */
export function withDeviceTable(b: CudaBackend, table: Uint8Array, fn: (ptr: Ptr) => void): void {
  const dev = b.alloc("int32", Math.ceil(table.length / 4));
  try {
    b.ctx.staging.upload(table, dev.ptr);
    fn(dev.ptr);
  } finally {
    b.free(dev);
  }
}

/** Blocks for a grid-stride loop over n items: enough to fill the GPU, no more. */
export function gridFor(b: CudaBackend, n: number, threads = THREADS): number {
  const cap = b.ctx.props.multiProcessorCount * 32;
  return Math.max(1, Math.min(Math.ceil(n / threads), cap));
}

/** Blocks for one-block-per-row kernels (grid-stride over rows beyond the cap). */
export function rowGrid(rows: number): number {
  return Math.max(1, Math.min(rows, 65535 * 16));
}

/** Threads for one-block-per-row kernels: a power of two covering the row, 32..1024. */
export function rowThreads(cols: number): number {
  let t = 32;
  while (t < cols && t < 1024) t *= 2;
  return t;
}

export function contiguousViewOf(storage: CudaStorage, shape: readonly number[]): View {
  return { storage, shape: [...shape], strides: contiguousStrides(shape), offset: 0 };
}

export interface Rows {
  readonly ptr: Ptr;
  readonly rows: number;
  readonly cols: number;
  readonly rowStride: number;
  readonly dtype: DType;
  /** The dtype's code in the kernels (DTYPE_CODE). */
  readonly code: number;
  /** Frees the temporary, if one was made. */
  release(): void;
}

/** An input view as rows with a stride (contiguous along the row), copying it when needed. */
export function inputRows(b: CudaBackend, view: View): Rows {
  const r = rowsOf(view);
  const dtype = view.storage.dtype;
  const code = DTYPE_CODE[dtype];
  if (r !== null) return { ptr: ptrOf(view, b), ...r, dtype, code, release: () => {} };
  const tmp = b.alloc(dtype, numelOf(view.shape));
  const tv = contiguousViewOf(tmp, view.shape);
  b.copy(view, tv);
  const cols = view.shape[view.shape.length - 1] ?? 1;
  return { ptr: tmp.ptr, rows: numelOf(view.shape) / Math.max(cols, 1), cols, rowStride: cols, dtype, code, release: () => b.free(tmp) };
}

/**
 * An output view as rows: itself when its layout allows, else a contiguous temporary that
 * `finish()` copies into the real output (and frees). "inout" fills the temporary from the view
 * first, for kernels that add into their output.
 */
export function outputRows(b: CudaBackend, view: View, mode: "out" | "inout" = "out"): Rows & { finish(): void } {
  const r = rowsOf(view);
  const dtype = view.storage.dtype;
  const code = DTYPE_CODE[dtype];
  if (r !== null) return { ptr: ptrOf(view, b), ...r, dtype, code, release: () => {}, finish: () => {} };
  const tmp = b.alloc(dtype, numelOf(view.shape));
  const tv = contiguousViewOf(tmp, view.shape);
  if (mode === "inout") b.copy(view, tv);
  const cols = view.shape[view.shape.length - 1] ?? 1;
  let done = false;
  const finish = () => {
    if (done) return;
    done = true;
    b.copy(tv, view);
    b.free(tmp);
  };
  return { ptr: tmp.ptr, rows: numelOf(view.shape) / Math.max(cols, 1), cols, rowStride: cols, dtype, code, release: finish, finish };
}

export interface Vector {
  readonly ptr: Ptr;
  /** Element stride (0 for a single element, so it reads as a broadcast scalar). */
  readonly stride: number;
  readonly n: number;
  readonly dtype: DType;
  /** The dtype's code in the kernels (DTYPE_CODE). */
  readonly code: number;
  /** Copies a temporary back to the real view ("out"/"inout") and frees it; a no-op without one. */
  finish(): void;
}

/**
 * A view read (and/or written) as a strided vector: pointer + element stride. A view with more than
 * one non-unit dim is staged through a contiguous temporary: copied in for "in"/"inout", copied back
 * by finish() for "out"/"inout".
 */
export function vector(b: CudaBackend, view: View, mode: "in" | "out" | "inout" = "in"): Vector {
  const dtype = view.storage.dtype;
  const code = DTYPE_CODE[dtype];
  const n = numelOf(view.shape);
  const dims = view.shape.map((s, i) => [s, view.strides[i]] as const).filter(([s]) => s !== 1);
  if (dims.length <= 1) return { ptr: ptrOf(view, b), stride: dims.length ? dims[0][1] : 0, n, dtype, code, finish: () => {} };
  // A contiguous [B, T] (token ids, per-token losses) is already a vector.
  if (isContiguous(view.shape, view.strides)) return { ptr: ptrOf(view, b), stride: 1, n, dtype, code, finish: () => {} };
  const tmp = b.alloc(dtype, n);
  const tv = contiguousViewOf(tmp, view.shape);
  if (mode !== "out") b.copy(view, tv);
  let done = false;
  return {
    ptr: tmp.ptr,
    stride: 1,
    n,
    dtype,
    code,
    finish: () => {
      if (done) return;
      done = true;
      if (mode !== "in") b.copy(tv, view);
      b.free(tmp);
    },
  };
}
