/**
 * Host side of the row-wise neural-network kernels: softmax.cu, layernorm.cu, embedding.cu and
 * cross_entropy.cu. Each view is passed as rows with a stride when its layout allows (the common
 * case, including offset views into flat buffers) and copied to a contiguous temporary otherwise.
 */
import type { View } from "@fulgur/tensor";
import type { CudaBackend } from "../cudaBackend";
import { ArgPack } from "../launch";
import { ptrOf } from "../storage";
import type { Vector } from "./common";
import { THREADS, gridFor, inputRows, outputRows, rowGrid, rowThreads, vector } from "./common";
import { DTYPE_CODE } from "./dtypes";

export function softmax(b: CudaBackend, x: View, out: View, log: boolean): void {
  const X = inputRows(b, x);
  const O = outputRows(b, out);
  try {
    if (X.rows === 0 || X.cols === 0) return;
    const ctx = b.ctx;
    const args = ArgPack.begin()
      .ptr(X.ptr)
      .i32(DTYPE_CODE[X.dtype])
      .i64(X.rowStride)
      .ptr(O.ptr)
      .i32(DTYPE_CODE[O.dtype])
      .i64(O.rowStride)
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
      .ptr(Y.ptr)
      .i32(DTYPE_CODE[Y.dtype])
      .i64(Y.rowStride)
      .ptr(G.ptr)
      .i32(DTYPE_CODE[G.dtype])
      .i64(G.rowStride)
      .ptr(O.ptr)
      .i32(DTYPE_CODE[O.dtype])
      .i64(O.rowStride)
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

function pushVec(a: ArgPack, v: Vec | null): ArgPack {
  return a.ptr(v ? v.ptr : null).i32(v ? DTYPE_CODE[v.dtype] : 0).i64(v ? v.stride : 0);
}

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
    let a = ArgPack.begin().ptr(X.ptr).i32(DTYPE_CODE[X.dtype]).i64(X.rowStride);
    a = pushVec(pushVec(a, W), B);
    a = a.ptr(O.ptr).i32(DTYPE_CODE[O.dtype]).i64(O.rowStride);
    a = pushVec(pushVec(a, M), R).i64(X.rows).i64(X.cols).f32(eps);
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
  gx: View,
  gw: View | null,
  gb: View | null,
): void {
  const G = inputRows(b, gy);
  const X = inputRows(b, x);
  const O = outputRows(b, gx);
  const W = optionalVector(b, weight);
  const M = vector(b, mean);
  const R = vector(b, rstd);
  const GW = optionalVector(b, gw, "inout");
  const GB = optionalVector(b, gb, "inout");
  const temps: ReturnType<CudaBackend["alloc"]>[] = [];
  try {
    if (X.rows === 0) return;
    const ctx = b.ctx;
    const mod = ctx.module("layernorm");
    let a = ArgPack.begin().ptr(G.ptr).i32(DTYPE_CODE[G.dtype]).i64(G.rowStride);
    a = a.ptr(X.ptr).i32(DTYPE_CODE[X.dtype]).i64(X.rowStride);
    a = pushVec(pushVec(pushVec(a, W), M), R);
    a = a.ptr(O.ptr).i32(DTYPE_CODE[O.dtype]).i64(O.rowStride).i64(X.rows).i64(X.cols);
    mod.launch("layernorm_bwd_dx", rowGrid(X.rows), rowThreads(X.cols), 0, ctx.compute, a);
    if (GW || GB) {
      // Two deterministic passes (see layernorm.cu): per-chunk column partials, then their sum.
      const chunks = Math.max(1, Math.min(128, Math.ceil(X.rows / 32)));
      const rowsPerChunk = Math.ceil(X.rows / chunks);
      const pw = GW ? b.alloc("float64", chunks * X.cols) : null;
      const pb = GB ? b.alloc("float64", chunks * X.cols) : null;
      if (pw) temps.push(pw);
      if (pb) temps.push(pb);
      let p = ArgPack.begin().ptr(G.ptr).i32(DTYPE_CODE[G.dtype]).i64(G.rowStride);
      p = p.ptr(X.ptr).i32(DTYPE_CODE[X.dtype]).i64(X.rowStride);
      p = pushVec(pushVec(p, M), R);
      p = p.ptr(pw ? pw.ptr : null).ptr(pb ? pb.ptr : null).i64(X.rows).i64(X.cols).i64(rowsPerChunk);
      mod.launch("layernorm_bwd_dwdb_partial", [Math.ceil(X.cols / THREADS), chunks], THREADS, 0, ctx.compute, p);
      let f = ArgPack.begin().ptr(pw ? pw.ptr : null).ptr(pb ? pb.ptr : null).i64(chunks).i64(X.cols);
      f = pushVec(pushVec(f, GW), GB);
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
      .ptr(O.ptr)
      .i32(DTYPE_CODE[O.dtype])
      .i64(O.rowStride)
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
      .ptr(G.ptr)
      .i32(DTYPE_CODE[G.dtype])
      .i64(G.rowStride)
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
      .ptr(L.ptr)
      .i32(DTYPE_CODE[L.dtype])
      .i64(L.rowStride)
      .ptr(T.ptr)
      .i64(T.stride)
      .i32(ignoreIndex | 0)
      .ptr(LO.ptr)
      .i32(DTYPE_CODE[LO.dtype])
      .i64(LO.stride)
      .ptr(LS.ptr)
      .i32(DTYPE_CODE[LS.dtype])
      .i64(LS.stride)
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
      .ptr(L.ptr)
      .i32(DTYPE_CODE[L.dtype])
      .i64(L.rowStride)
      .ptr(T.ptr)
      .i64(T.stride)
      .ptr(LS.ptr)
      .i32(DTYPE_CODE[LS.dtype])
      .i64(LS.stride)
      .ptr(G.ptr)
      .i32(DTYPE_CODE[G.dtype])
      // A single loss gradient (a mean reduction's) is broadcast to every row.
      .i64(G.n === 1 ? 0 : G.stride)
      .i32(ignoreIndex | 0)
      .ptr(O.ptr)
      .i32(DTYPE_CODE[O.dtype])
      .i64(O.rowStride)
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
