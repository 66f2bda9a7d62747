/**
 * Host side of kernels/reduce.cu. Splits x's dims into kept and reduced ones (a dim is reduced when
 * out has size 1 there and x does not), coalesces each group, and chooses the kernel by memory
 * order: when x's innermost dim is kept, neighbouring outputs are neighbouring in memory and one
 * thread per output (reduce_cols) reads coalesced; otherwise one block per output (reduce_rows).
 */
import type { ReduceOp, View } from "@fulgur/tensor";
import type { CudaBackend } from "../cudaBackend";
import { ArgPack, MAX_DIMS } from "../launch";
import { ptrOf } from "../storage";
import { THREADS, contiguousViewOf, rowGrid } from "./common";
import { DTYPE_CODE } from "./dtypes";
import type { Coalesced } from "./layout";
import { coalesce, isContiguous, numelOf } from "./layout";

const REDUCE_CODE: Readonly<Record<Exclude<ReduceOp, "argmax">, number>> = { sum: 0, max: 1, min: 2 };

export function reduce(b: CudaBackend, op: ReduceOp, x: View, out: View): void {
  if (op !== "argmax" && REDUCE_CODE[op] === undefined) {
    throw new TypeError(`reduce op: got ${JSON.stringify(op)}; expected one of sum, max, min, argmax`);
  }
  if (x.shape.length !== out.shape.length) {
    throw new RangeError(`reduce: out [${out.shape.join(", ")}] must have x's rank ${x.shape.length} with size 1 on reduced dims`);
  }
  if (numelOf(out.shape) === 0) return;
  // Outputs are written at their linear index; a strided output goes through a temporary.
  if (!isContiguous(out.shape, out.strides)) {
    const tmp = b.alloc(out.storage.dtype, numelOf(out.shape));
    const tv = contiguousViewOf(tmp, out.shape);
    reduce(b, op, x, tv);
    b.copy(tv, out);
    b.free(tmp);
    return;
  }
  const reduced = x.shape.map((s, d) => out.shape[d] === 1 && s !== 1);
  const keptDims = x.shape.map((_, d) => d).filter((d) => !reduced[d]);
  const redDims = x.shape.map((_, d) => d).filter((d) => reduced[d]);
  if (redDims.length === 0) {
    // Nothing to reduce: sum/max/min of one element is the element; argmax of one element is 0.
    if (op === "argmax") b.fill(out, 0);
    else b.copy(x, out);
    return;
  }
  const outer = coalesce(
    keptDims.map((d) => x.shape[d]),
    [keptDims.map((d) => x.strides[d])],
  );
  const nOut = numelOf(out.shape);
  const ctx = b.ctx;
  if (op === "argmax") {
    if (redDims.length !== 1) {
      throw new RangeError(`argmax reduces exactly one dimension; out [${out.shape.join(", ")}] reduces ${redDims.length} of x [${x.shape.join(", ")}]`);
    }
    const rd = redDims[0];
    checkDims(outer.shape.length, x);
    const args = ArgPack.begin()
      .ptr(ptrOf(x, b))
      .i32(DTYPE_CODE[x.storage.dtype])
      .ptr(ptrOf(out, b))
      .i32(DTYPE_CODE[out.storage.dtype])
      .shape8(outer.shape)
      .strides8(outer.strides[0])
      .i64(x.strides[rd])
      .u64(nOut)
      .u64(x.shape[rd]);
    ctx.module("reduce").launch("argmax_rows", rowGrid(nOut), THREADS, 0, ctx.compute, args);
    return;
  }
  const inner = coalesce(
    redDims.map((d) => x.shape[d]),
    [redDims.map((d) => x.strides[d])],
  );
  checkDims(Math.max(outer.shape.length, inner.shape.length), x);
  const nInner = numelOf(inner.shape);
  // Column kernel when the kept dims hold the smallest stride (neighbouring outputs adjacent in memory).
  const colsPlan = planReduceCols(outer, inner, ptrOf(x, b), b.ctx.props.multiProcessorCount);
  if (colsPlan !== null) {
    reduceColsTwoStage(b, REDUCE_CODE[op], x, out, colsPlan);
    return;
  }
  const minKept = outer.shape.length ? Math.min(...outer.strides[0].map(Math.abs)) : Infinity;
  const minRed = Math.min(...inner.strides[0].map(Math.abs));
  const cols = minKept < minRed && nOut >= 256;
  const args = ArgPack.begin()
    .ptr(ptrOf(x, b))
    .i32(DTYPE_CODE[x.storage.dtype])
    .ptr(ptrOf(out, b))
    .i32(DTYPE_CODE[out.storage.dtype])
    .shape8(outer.shape)
    .strides8(outer.strides[0])
    .shape8(inner.shape)
    .strides8(inner.strides[0])
    .u64(nOut)
    .u64(nInner)
    .i32(REDUCE_CODE[op]);
  // reduce_cols: 32 outputs per block, 16 row slices (COL_SLICES in reduce.cu) of 32 threads.
  if (cols) ctx.module("reduce").launch("reduce_cols", Math.ceil(nOut / 32), 32 * 16, 0, ctx.compute, args);
  else ctx.module("reduce").launch("reduce_rows", rowGrid(nOut), THREADS, 0, ctx.compute, args);
}

/**
 * The two-stage column reduction (reduce_cols_partial + reduce_cols_finish in reduce.cu) for x read
 * as [rows, cols] with unit column stride and row stride ld >= cols: the bias-gradient shape.
 * `chunks` row chunks of `rowsPerChunk` rows, chosen so that column groups x chunks is at least
 * PART_BLOCKS_PER_SM blocks per SM, but no chunk shorter than MIN_CHUNK_ROWS (4 rows per warp, one
 * batch of loads) so stage 2 stays short. `vec`: 16-byte loads of 8 columns per lane, when the
 * columns and row stride are multiples of 8 and x is 16-byte aligned.
 */
export interface ReduceColsPlan {
  readonly rows: number;
  readonly cols: number;
  readonly ld: number;
  readonly vec: boolean;
  /** Column groups (grid x): 32 lanes of 8 columns with vec, 32 columns without. */
  readonly colBlocks: number;
  readonly chunks: number;
  readonly rowsPerChunk: number;
}

export const PART_WARPS = 8;
export const PART_BLOCKS_PER_SM = 8;
export const MIN_CHUNK_ROWS = 32;

export function planReduceCols(outer: Coalesced, inner: Coalesced, xPtr: bigint, smCount: number): ReduceColsPlan | null {
  if (outer.shape.length !== 1 || inner.shape.length !== 1) return null;
  const cols = outer.shape[0];
  const rows = inner.shape[0];
  const ld = inner.strides[0][0];
  if (outer.strides[0][0] !== 1 || ld < cols) return null;
  const vec = xPtr % 16n === 0n && cols % 8 === 0 && ld % 8 === 0;
  const colBlocks = Math.ceil(cols / (vec ? 256 : 32));
  const target = Math.ceil((PART_BLOCKS_PER_SM * smCount) / colBlocks);
  const maxChunks = Math.max(1, Math.ceil(rows / MIN_CHUNK_ROWS));
  const want = Math.max(1, Math.min(target, maxChunks, 65535));
  const rowsPerChunk = Math.ceil(rows / want);
  return { rows, cols, ld, vec, colBlocks, chunks: Math.ceil(rows / rowsPerChunk), rowsPerChunk };
}

function reduceColsTwoStage(b: CudaBackend, op: number, x: View, out: View, p: ReduceColsPlan): void {
  const ctx = b.ctx;
  const xd = x.storage.dtype;
  // float32 partials are exact enough for 16/32-bit float input; float64 and int32 keep float64.
  const pd = xd === "float64" || xd === "int32" ? "float64" : "float32";
  const part = b.alloc(pd, p.chunks * p.cols);
  const mod = ctx.module("reduce");
  const a1 = ArgPack.begin()
    .ptr(ptrOf(x, b))
    .i32(DTYPE_CODE[xd])
    .ptr(part.ptr)
    .i32(DTYPE_CODE[pd])
    .u64(p.rows)
    .u64(p.cols)
    .u64(p.ld)
    .u64(p.rowsPerChunk)
    .i32(op)
    .i32(p.vec ? 1 : 0);
  mod.launch("reduce_cols_partial", [p.colBlocks, p.chunks], 32 * PART_WARPS, 0, ctx.compute, a1);
  const a2 = ArgPack.begin().ptr(part.ptr).i32(DTYPE_CODE[pd]).ptr(ptrOf(out, b)).i32(DTYPE_CODE[out.storage.dtype]).u64(p.cols).u64(p.chunks).i32(op);
  mod.launch("reduce_cols_finish", Math.ceil(p.cols / 32), 32 * PART_WARPS, 0, ctx.compute, a2);
  // Stream-ordered: the memory is reused only by work queued after both kernels.
  b.free(part);
}

function checkDims(n: number, x: View): void {
  if (n > MAX_DIMS) {
    throw new RangeError(`reduce over [${x.shape.join(", ")}]: ${n} non-mergeable dims; at most ${MAX_DIMS} are supported`);
  }
}
