/**
 * Host side of the row-wise neural-network kernels: softmax.cu, layernorm.cu, embedding.cu and
 * cross_entropy.cu. Each view is passed as rows with a stride when its layout allows (the common
 * case, including offset views into flat buffers) and copied to a contiguous temporary otherwise.
 */
import type { DType, View } from "@fulgur/tensor";
import type { CudaBackend } from "../cudaBackend";
import { ArgPack } from "../launch";
import { ptrOf } from "../storage";
import type { Vector } from "./common";
import { THREADS, contiguousViewOf, gridFor, inputRows, outputRows, rowGrid, rowThreads, vector } from "./common";
import { numelOf } from "./layout";
import { DTYPE_CODE, itemsizeOf } from "./dtypes";

export function softmax(b: CudaBackend, x: View, out: View, log: boolean): void {
  const X = inputRows(b, x);
  const O = outputRows(b, out);
  try {
    if (X.rows === 0 || X.cols === 0) return;
    const ctx = b.ctx;
    const args = ArgPack.begin()
      .rows(X)
      .rows(O)
      .i64(X.rows)
      .i64(X.cols)
      .i32(log ? 1 : 0);
    ctx.module("softmax").launch("softmax_fwd", rowGrid(X.rows), rowThreads(X.cols), 0, ctx.compute, args);
  } finally {
    O.finish();
    X.release();
  }
}

export function softmaxBackward(b: CudaBackend, y: View, gy: View, gx: View, log: boolean): void {
  const Y = inputRows(b, y);
  const G = inputRows(b, gy);
  const O = outputRows(b, gx);
  try {
    if (O.rows === 0 || O.cols === 0) return;
    const ctx = b.ctx;
    const args = ArgPack.begin()
      .rows(Y)
      .rows(G)
      .rows(O)
      .i64(O.rows)
      .i64(O.cols)
      .i32(log ? 1 : 0);
    ctx.module("softmax").launch("softmax_bwd", rowGrid(O.rows), rowThreads(O.cols), 0, ctx.compute, args);
  } finally {
    O.finish();
    G.release();
    Y.release();
  }
}

type Vec = Vector;

function optionalVector(b: CudaBackend, v: View | null, mode: "in" | "out" | "inout" = "in"): Vec | null {
  return v === null ? null : vector(b, v, mode);
}

/**
 * Per-thread capacity, in elements, of the fast layer-norm kernels (kernels/layernorm.cu,
 * LN_FWD_VEC ... LN_BWD_SCALAR): the backward holds four values per element, the scalar variants one
 * address each. It does not depend on the vector width: a wider one only groups the same elements
 * into fewer accesses.
 */
export const LN_CAPACITY = { fwd: { vec: 16, scalar: 8 }, bwd: { vec: 8, scalar: 4 } } as const;
/** Threads per row at most (one block per row; 64 registers a thread at this size). */
export const LN_MAX_THREADS = 1024;
const LN_SUFFIX: Partial<Record<DType, string>> = { float32: "f32", bfloat16: "bf16", float16: "f16" };
/**
 * The row dtype pairs layernorm.cu instantiates (LN_VARIANTS), by suffix: (x, out) forward, (gy, x)
 * backward. One dtype throughout, or float32 beside a 16-bit float either way round: the layer norm
 * of a float32 residual stream feeding a 16-bit matmul, and its backward with a 16-bit gy.
 */
export const LN_DTYPE_PAIRS: readonly (readonly [string, string])[] = [
  ["f32", "f32"],
  ["bf16", "bf16"],
  ["f16", "f16"],
  ["f32", "bf16"],
  ["f32", "f16"],
  ["bf16", "f32"],
  ["f16", "f32"],
];
const LN_PAIR_NAMES = new Set(LN_DTYPE_PAIRS.map(([a, b]) => `${a}_${b}`));

/** A row operand of a layer-norm launch, as far as kernel selection cares. */
export interface LayerNormRowOperand {
  readonly dtype: DType;
  readonly ptr: bigint;
  readonly rowStride: number;
}

export interface LayerNormPlan {
  /** The fast kernel to launch. */
  readonly kernel: string;
  /** Threads per block (one block per row): a multiple of 32 covering the row at the kernel's capacity. */
  readonly threads: number;
  /** V-element accesses (16 bytes of the narrowest operand; every row aligned, V | cols) rather than one element at a time. */
  readonly vec: boolean;
}

/**
 * Which fast layer-norm kernel, if any, handles rows of `cols` elements whose row operands are
 * `rows`: [x, out] forward, [gy, x, gx] backward. null sends the launch to the generic float64
 * kernels: a dtype pair outside LN_DTYPE_PAIRS (float64 and int32 among them), gx in a dtype other
 * than x's, an empty row, or a row wider than LN_MAX_THREADS threads can hold.
 *
 * The vector kernels move V elements of every operand per access, V = 16 bytes over the narrowest
 * row dtype (8 when any operand is 16-bit, float32 rows then taking two 16-byte words), so they need
 * V | cols and every operand's rows on 16-byte boundaries.
 */
export function layerNormPlan(pass: "fwd" | "bwd", rows: readonly LayerNormRowOperand[], cols: number): LayerNormPlan | null {
  if (cols < 1 || rows.length !== (pass === "fwd" ? 2 : 3)) return null;
  if (pass === "bwd" && rows[2].dtype !== rows[1].dtype) return null;
  const first = LN_SUFFIX[rows[0].dtype];
  const second = LN_SUFFIX[rows[1].dtype];
  if (first === undefined || second === undefined) return null;
  const name = `${first}_${second}`;
  if (!LN_PAIR_NAMES.has(name)) return null;
  const width = 16 / Math.min(...rows.map((r) => itemsizeOf(r.dtype)));
  const vec = cols % width === 0 && rows.every((r) => r.ptr % 16n === 0n && (r.rowStride * itemsizeOf(r.dtype)) % 16 === 0);
  const threads = 32 * Math.ceil(cols / LN_CAPACITY[pass][vec ? "vec" : "scalar"] / 32);
  if (threads > LN_MAX_THREADS) return null;
  return { kernel: `layernorm_${pass}_${name}_${vec ? "vec" : "scalar"}`, threads, vec };
}

/** Whether a weight-like vector may be read in 16-byte words by the vector kernels (LN_W_VEC / LN_B_VEC). */
export function paramIsVectorisable(v: { ptr: bigint | null; stride: number } | null): boolean {
  return v !== null && v.ptr !== null && v.stride === 1 && v.ptr % 16n === 0n;
}

/** Blocks for the fast backward: one wave (64 registers a thread: 1024 threads an SM), at most one per row. */
export function layerNormBackwardGrid(rows: number, threads: number, multiProcessorCount: number): number {
  return Math.max(1, Math.min(rows, multiProcessorCount * Math.max(1, Math.min(32, Math.floor(1024 / threads)))));
}

const LN_W_VEC = 1;
const LN_B_VEC = 2;
const LN_GX_ACC = 4;

export function layerNorm(
  b: CudaBackend,
  x: View,
  weight: View | null,
  bias: View | null,
  eps: number,
  out: View,
  mean: View,
  rstd: View,
): void {
  const X = inputRows(b, x);
  const O = outputRows(b, out);
  const W = optionalVector(b, weight);
  const B = optionalVector(b, bias);
  const M = vector(b, mean, "out");
  const R = vector(b, rstd, "out");
  try {
    if (X.rows === 0) return;
    const ctx = b.ctx;
    const plan = layerNormPlan("fwd", [X, O], X.cols);
    if (plan) {
      const flags = (paramIsVectorisable(W) ? LN_W_VEC : 0) | (paramIsVectorisable(B) ? LN_B_VEC : 0);
      // The fast kernels take their row dtypes from their names: rows are pointer and stride only.
      const a = ArgPack.begin().ptr(X.ptr).i64(X.rowStride).vec(W).vec(B).ptr(O.ptr).i64(O.rowStride);
      a.vec(M).vec(R).i64(X.rows).i64(X.cols).f32(eps).i32(flags);
      ctx.module("layernorm").launch(plan.kernel, rowGrid(X.rows), plan.threads, 0, ctx.compute, a);
      return;
    }
    const a = ArgPack.begin().rows(X).vec(W).vec(B).rows(O).vec(M).vec(R).i64(X.rows).i64(X.cols).f32(eps);
    ctx.module("layernorm").launch("layernorm_fwd", rowGrid(X.rows), rowThreads(X.cols), 0, ctx.compute, a);
  } finally {
    O.finish();
    for (const v of [W, B, M, R]) v?.finish();
    X.release();
  }
}

export function layerNormBackward(
  b: CudaBackend,
  gy: View,
  x: View,
  weight: View | null,
  mean: View,
  rstd: View,
  gx: View | null,
  gw: View | null,
  gb: View | null,
  accumulateGx = false,
): void {
  // Without gx (a split backward's weight pass), the fused kernel below still writes one as it sums
  // gw's and gb's partials: into a scratch buffer laid out as gx would be, so the same kernel runs
  // on the same plan and gw and gb come out bit-identical. The generic path skips its gx kernel.
  const scratch = gx === null ? b.alloc(x.storage.dtype, numelOf(x.shape)) : null;
  const G = inputRows(b, gy);
  const X = inputRows(b, x);
  const O = outputRows(b, gx ?? contiguousViewOf(scratch!, x.shape), accumulateGx ? "inout" : "out");
  const W = optionalVector(b, weight);
  const M = vector(b, mean);
  const R = vector(b, rstd);
  const GW = optionalVector(b, gw, "inout");
  const GB = optionalVector(b, gb, "inout");
  const temps: ReturnType<CudaBackend["alloc"]>[] = scratch ? [scratch] : [];
  try {
    if (X.rows === 0) return;
    const ctx = b.ctx;
    const mod = ctx.module("layernorm");
    const plan = layerNormPlan("bwd", [G, X, O], X.cols);
    if (plan) {
      // gx and per-block column partials of gw / gb in one pass, then a fixed-order sum of the
      // partials into gw / gb (see layernorm.cu).
      const parts = layerNormBackwardGrid(X.rows, plan.threads, ctx.props.multiProcessorCount);
      const pw = GW ? b.alloc("float32", parts * X.cols) : null;
      const pb = GB ? b.alloc("float32", parts * X.cols) : null;
      if (pw) temps.push(pw);
      if (pb) temps.push(pb);
      const a = ArgPack.begin().ptr(G.ptr).i64(G.rowStride).ptr(X.ptr).i64(X.rowStride).vec(W).vec(M).vec(R);
      a.ptr(O.ptr).i64(O.rowStride).ptr(pw ? pw.ptr : null).ptr(pb ? pb.ptr : null);
      a.i64(X.rows).i64(X.cols).i32((paramIsVectorisable(W) ? LN_W_VEC : 0) | (accumulateGx ? LN_GX_ACC : 0));
      mod.launch(plan.kernel, parts, plan.threads, 0, ctx.compute, a);
      if (GW || GB) {
        const f = ArgPack.begin().ptr(pw ? pw.ptr : null).ptr(pb ? pb.ptr : null).i64(parts).i64(X.cols).vec(GW).vec(GB);
        mod.launch("layernorm_bwd_dwdb_reduce", [Math.ceil(X.cols / 32), 2], [32, 32], 0, ctx.compute, f);
      }
      return;
    }
    const a = ArgPack.begin().rows(G).rows(X).vec(W).vec(M).vec(R).rows(O).i64(X.rows).i64(X.cols).i32(accumulateGx ? 1 : 0);
    if (gx !== null) mod.launch("layernorm_bwd_dx", rowGrid(X.rows), rowThreads(X.cols), 0, ctx.compute, a);
    if (GW || GB) {
      // Two deterministic passes (see layernorm.cu): per-chunk column partials, then their sum.
      const chunks = Math.max(1, Math.min(128, Math.ceil(X.rows / 32)));
      const rowsPerChunk = Math.ceil(X.rows / chunks);
      const pw = GW ? b.alloc("float64", chunks * X.cols) : null;
      const pb = GB ? b.alloc("float64", chunks * X.cols) : null;
      if (pw) temps.push(pw);
      if (pb) temps.push(pb);
      const p = ArgPack.begin().rows(G).rows(X).vec(M).vec(R);
      p.ptr(pw ? pw.ptr : null).ptr(pb ? pb.ptr : null).i64(X.rows).i64(X.cols).i64(rowsPerChunk);
      mod.launch("layernorm_bwd_dwdb_partial", [Math.ceil(X.cols / THREADS), chunks], THREADS, 0, ctx.compute, p);
      const f = ArgPack.begin().ptr(pw ? pw.ptr : null).ptr(pb ? pb.ptr : null).i64(chunks).i64(X.cols).vec(GW).vec(GB);
      mod.launch("layernorm_bwd_dwdb_final", gridFor(b, X.cols), THREADS, 0, ctx.compute, f);
    }
  } finally {
    for (const t of temps) b.free(t);
    O.finish();
    for (const v of [W, M, R, GW, GB]) v?.finish();
    X.release();
    G.release();
  }
}

export function embedding(b: CudaBackend, weight: View, ids: View, out: View): void {
  if (weight.shape.length !== 2) throw new RangeError(`embedding: weight must be 2-D [rows, dim], got [${weight.shape.join(", ")}]`);
  const I = vector(b, ids);
  const O = outputRows(b, out);
  try {
    const n = I.n;
    const dim = weight.shape[1];
    if (n === 0 || dim === 0) return;
    if (ids.storage.dtype !== "int32") throw new TypeError(`embedding: ids must be int32, got ${ids.storage.dtype}`);
    const ctx = b.ctx;
    const a = ArgPack.begin()
      .ptr(ptrOf(weight, b))
      .i32(DTYPE_CODE[weight.storage.dtype])
      .i64(weight.strides[0])
      .i64(weight.strides[1])
      .ptr(I.ptr)
      .i64(I.stride)
      .rows(O)
      .i64(n)
      .i64(dim)
      .i64(weight.shape[0])
      .ptr(ctx.status.ptr);
    ctx.module("embedding").launch("embedding_fwd", gridFor(b, n * dim), THREADS, 0, ctx.compute, a);
  } finally {
    O.finish();
    I.finish();
  }
}

export function embeddingBackward(b: CudaBackend, gy: View, ids: View, gw: View): void {
  if (gw.shape.length !== 2) throw new RangeError(`embeddingBackward: gw must be 2-D [rows, dim], got [${gw.shape.join(", ")}]`);
  const I = vector(b, ids);
  const G = inputRows(b, gy);
  try {
    const n = I.n;
    const dim = gw.shape[1];
    if (n === 0 || dim === 0) return;
    if (ids.storage.dtype !== "int32") throw new TypeError(`embeddingBackward: ids must be int32, got ${ids.storage.dtype}`);
    const ctx = b.ctx;
    const a = ArgPack.begin()
      .rows(G)
      .i64(1)
      .ptr(I.ptr)
      .i64(I.stride)
      .ptr(ptrOf(gw, b))
      .i32(DTYPE_CODE[gw.storage.dtype])
      .i64(gw.strides[0])
      .i64(gw.strides[1])
      .i64(n)
      .i64(dim)
      .i64(gw.shape[0])
      .ptr(ctx.status.ptr);
    ctx.module("embedding").launch("embedding_bwd", gridFor(b, n * dim), THREADS, 0, ctx.compute, a);
  } finally {
    G.release();
    I.finish();
  }
}

export function crossEntropy(b: CudaBackend, logits: View, targets: View, ignoreIndex: number, loss: View, lse: View): void {
  const L = inputRows(b, logits);
  const T = vector(b, targets);
  const LO = vector(b, loss, "out");
  const LS = vector(b, lse, "out");
  try {
    if (L.rows === 0) return;
    if (targets.storage.dtype !== "int32") throw new TypeError(`crossEntropy: targets must be int32, got ${targets.storage.dtype}`);
    const ctx = b.ctx;
    const a = ArgPack.begin()
      .rows(L)
      .ptr(T.ptr)
      .i64(T.stride)
      .i32(ignoreIndex | 0)
      .vec(LO)
      .vec(LS)
      .i64(L.rows)
      .i64(L.cols)
      .ptr(ctx.status.ptr);
    ctx.module("cross_entropy").launch("ce_fwd", rowGrid(L.rows), rowThreads(L.cols), 0, ctx.compute, a);
  } finally {
    for (const v of [LS, LO, T]) v.finish();
    L.release();
  }
}

export function crossEntropyBackward(
  b: CudaBackend,
  logits: View,
  targets: View,
  lse: View,
  gloss: View,
  ignoreIndex: number,
  glogits: View,
): void {
  const L = inputRows(b, logits);
  const T = vector(b, targets);
  const LS = vector(b, lse);
  const G = vector(b, gloss);
  const O = outputRows(b, glogits);
  try {
    if (L.rows === 0 || L.cols === 0) return;
    if (targets.storage.dtype !== "int32") throw new TypeError(`crossEntropyBackward: targets must be int32, got ${targets.storage.dtype}`);
    const ctx = b.ctx;
    const a = ArgPack.begin()
      .rows(L)
      .ptr(T.ptr)
      .i64(T.stride)
      .vec(LS)
      .ptr(G.ptr)
      .i32(DTYPE_CODE[G.dtype])
      // A single loss gradient (a mean reduction's) is broadcast to every row.
      .i64(G.n === 1 ? 0 : G.stride)
      .i32(ignoreIndex | 0)
      .rows(O)
      .i64(L.rows)
      .i64(L.cols)
      .ptr(ctx.status.ptr);
    ctx.module("cross_entropy").launch("ce_bwd", gridFor(b, L.rows * L.cols), THREADS, 0, ctx.compute, a);
  } finally {
    O.finish();
    for (const v of [G, LS, T]) v.finish();
    L.release();
  }
}
