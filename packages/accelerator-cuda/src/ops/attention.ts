/**
 * Host side of kernels/attention.cu and kernels/attention_mma.cu: checks shapes, picks the path
 * (attentionPath: the tensor-core kernels for bf16/f16, head dim 64 or 128, Tq == Tk; the fp32
 * kernels otherwise), stages operands the chosen kernels cannot read in place, computes the
 * shared-memory budget, and queues the forward kernel or the three backward kernels (delta, dK/dV,
 * dQ). bench/attention_check.cu launches the same kernels with the same grid, block and shared
 * memory; keep the two in step.
 */
import type { View } from "@fulgur/tensor";
import type { CudaBackend } from "../cudaBackend";
import type { Ptr } from "../ffi/cudart";
import { ArgPack } from "../launch";
import { ptrOf } from "../storage";
import { contiguousViewOf, gridFor } from "./common";
import { DTYPE_CODE } from "./dtypes";
import { numelOf } from "./layout";

const BM = 32;
const BN = 32;
const NTHREADS = 128;
const F32 = 4;

// attention_mma.cu: 64x64 tiles, 4 warps, 16-bit tiles padded by FA_PAD elements per row.
const FA_BM = 64;
const FA_BN = 64;
const FA_THREADS = 128;
const FA_PAD = 8;

/** struct AttnTensor { u64 ptr; i64 sb, sh, st; int dt; int pad; } (40 bytes). */
export const ATTN_TENSOR_BYTES = 40;

interface Operand {
  readonly ptr: Ptr;
  readonly strides: readonly number[];
  readonly dtype: number;
  finish(): void;
}

/**
 * Whether a [B, H, T, D] 16-bit operand can be read and written in place by attention_mma.cu: a
 * 16-byte aligned base and b/h/t strides that are multiples of 8 elements (cp.async moves 16 bytes;
 * outputs are stored in pairs). Unit dims never advance, so their strides do not matter.
 */
export function mmaAligned(ptr: bigint, shape: readonly number[], strides: readonly number[]): boolean {
  if (ptr % 16n !== 0n) return false;
  for (let i = 0; i < 3; i++) if (shape[i] > 1 && strides[i] % 8 !== 0) return false;
  return true;
}

/**
 * A [B, H, T, D] view usable by the kernels (last dim contiguous, and for the mma kernels
 * `aligned` as mmaAligned says), staged through a contiguous temporary if not.
 */
function operand(b: CudaBackend, v: View, mode: "in" | "out", aligned = false): Operand {
  const last = v.shape.length - 1;
  const dtype = DTYPE_CODE[v.storage.dtype];
  if (v.shape.length !== 4 && v.shape.length !== 3) throw new RangeError(`attention operand must be [B, H, T, D], got [${v.shape.join(", ")}]`);
  const lastOk = v.shape.length === 3 || v.shape[last] === 1 || v.strides[last] === 1;
  if (lastOk && (!aligned || mmaAligned(ptrOf(v, b), v.shape, v.strides))) {
    return { ptr: ptrOf(v, b), strides: v.strides, dtype, finish: () => {} };
  }
  const tmp = b.alloc(v.storage.dtype, numelOf(v.shape));
  const tv = contiguousViewOf(tmp, v.shape);
  if (mode === "in") b.copy(v, tv);
  return {
    ptr: tmp.ptr,
    strides: tv.strides,
    dtype,
    finish: () => {
      if (mode === "out") b.copy(tv, v);
      b.free(tmp);
    },
  };
}

function pushTensor(a: ArgPack, o: Operand): ArgPack {
  return a.struct(ATTN_TENSOR_BYTES, (view, off) => {
    view.setBigUint64(off, o.ptr, true);
    view.setBigInt64(off + 8, BigInt(o.strides[0]), true);
    view.setBigInt64(off + 16, BigInt(o.strides[1]), true);
    view.setBigInt64(off + 24, BigInt(o.strides[2]), true);
    view.setInt32(off + 32, o.dtype, true);
    view.setInt32(off + 36, 0, true);
  });
}

/** Shared memory (bytes) each kernel needs for head-dim bound dmax; mirrors the carving in attention.cu. */
export function attentionSharedBytes(kernel: "fwd" | "dkdv" | "dq", dmax: 64 | 128): number {
  const ld = dmax + 1;
  const lp = BN + 1;
  switch (kernel) {
    case "fwd":
      return ((BM + 2 * BN) * ld + BM * lp) * F32;
    case "dkdv":
      return ((2 * BN + 2 * BM) * ld + 2 * BM * lp + 2 * BM) * F32;
    case "dq":
      return ((2 * BM + 2 * BN) * ld + BM * lp) * F32;
  }
}

/**
 * Shared memory (bytes) of the attention_mma.cu kernels for head dim D; mirrors FaCfg<D> there:
 * a tile is 64 rows of D + FA_PAD 16-bit values; forward holds Q, K[2], V[2]; dK/dV holds K, V,
 * Q[2], dO[2] and two [2][64] float tables (lse, delta); dQ holds Q, dO, K[2], V[2].
 */
export function attentionMmaSharedBytes(kernel: "fwd" | "dkdv" | "dq", D: 64 | 128): number {
  const tile = FA_BN * (D + FA_PAD) * 2;
  switch (kernel) {
    case "fwd":
      return 5 * tile;
    case "dkdv":
      return 6 * tile + 4 * FA_BM * F32;
    case "dq":
      return 6 * tile;
  }
}

export type AttentionPath = { kind: "mma"; D: 64 | 128; dtype: "bf16" | "f16" } | { kind: "fp32"; dmax: 64 | 128 };

/**
 * Which kernels run an attention call: the tensor-core ones (attention_mma.cu) when every 16-bit
 * operand has one dtype, bf16 or f16, q, k and v share a head dim of 64 or 128, and Tq == Tk;
 * attention.cu's fp32 kernels for everything else. `dtypes` lists the dtypes of q, k, v and the
 * other [B, H, T, D] operands (out; or out, gout, gq, gk, gv); lse is float32 either way.
 */
export function attentionPath(
  qShape: readonly number[],
  kShape: readonly number[],
  vShape: readonly number[],
  dtypes: readonly string[],
): AttentionPath {
  const D = qShape[3];
  const Dv = vShape[3];
  const dt = dtypes[0];
  const sameDtype = dtypes.every((d) => d === dt);
  if (sameDtype && (dt === "bfloat16" || dt === "float16") && (D === 64 || D === 128) && kShape[3] === D && Dv === D && qShape[2] === kShape[2]) {
    return { kind: "mma", D, dtype: dt === "bfloat16" ? "bf16" : "f16" };
  }
  return { kind: "fp32", dmax: headDimBound(D, Dv) };
}

/** The head-dim instantiation for D (q/k) and Dv (v); throws above 128. */
export function headDimBound(D: number, Dv: number): 64 | 128 {
  const d = Math.max(D, Dv);
  if (d <= 64) return 64;
  if (d <= 128) return 128;
  throw new RangeError(`attention: head dim ${d} is above 128, the largest the CUDA attention kernels support`);
}

function dims(q: View, k: View, v: View) {
  if (q.shape.length !== 4 || k.shape.length !== 4 || v.shape.length !== 4) {
    throw new RangeError(
      `attention: q, k, v must be [B, H, T, D]; got q [${q.shape.join(", ")}], k [${k.shape.join(", ")}], v [${v.shape.join(", ")}]`,
    );
  }
  const [B, H, Tq, D] = q.shape;
  const Tk = k.shape[2];
  const Dv = v.shape[3];
  if (B * H > 65535) throw new RangeError(`attention: batch * heads = ${B * H} exceeds 65535, the kernels' grid limit`);
  return { B, H, Tq, Tk, D, Dv, dmax: headDimBound(D, Dv) };
}

function prepare(b: CudaBackend, fn: string, kernel: "fwd" | "dkdv" | "dq", dmax: 64 | 128, module = "attention"): number {
  const bytes = module === "attention" ? attentionSharedBytes(kernel, dmax) : attentionMmaSharedBytes(kernel, dmax);
  const ctx = b.ctx;
  if (bytes > ctx.props.maxSharedMemoryPerBlockOptin) {
    throw new RangeError(
      `attention: ${fn} needs ${bytes} bytes of shared memory per block; ${ctx.label} allows ${ctx.props.maxSharedMemoryPerBlockOptin}`,
    );
  }
  if (bytes > 48 * 1024) ctx.module(module).allowSharedMemory(fn, bytes);
  return bytes;
}

export function attention(b: CudaBackend, q: View, k: View, v: View, out: View, lse: View, causal: boolean, scale: number): void {
  const d = dims(q, k, v);
  if (d.B * d.H * d.Tq === 0) return;
  const path = attentionPath(q.shape, k.shape, v.shape, [q, k, v, out].map((x) => x.storage.dtype));
  const mma = path.kind === "mma";
  const ops = [operand(b, q, "in", mma), operand(b, k, "in", mma), operand(b, v, "in", mma), operand(b, out, "out", mma), operand(b, lse, "out")];
  try {
    const ctx = b.ctx;
    let a = ArgPack.begin();
    for (const o of ops) a = pushTensor(a, o);
    if (path.kind === "mma") {
      // attention_mma.cu: grid [ceil(T / 64), B * H], 128 threads, FaCfg<D>::FWD_SMEM.
      const fn = `attn_mma_fwd_${path.dtype}_d${path.D}`;
      const smem = prepare(b, fn, "fwd", path.D, "attention_mma");
      a = a.i32(d.H).i64(d.Tq).i32(causal ? 1 : 0).f32(scale);
      ctx.module("attention_mma").launch(fn, [Math.ceil(d.Tq / FA_BM), d.B * d.H], FA_THREADS, smem, ctx.compute, a);
      return;
    }
    const fn = `attn_fwd_d${d.dmax}`;
    const smem = prepare(b, fn, "fwd", d.dmax);
    a = a.i32(d.H).i64(d.Tq).i64(d.Tk).i32(d.D).i32(d.Dv).i32(causal ? 1 : 0).f32(scale);
    ctx.module("attention").launch(fn, [Math.ceil(d.Tq / BM), d.B * d.H], NTHREADS, smem, ctx.compute, a);
  } finally {
    for (const o of ops) o.finish();
  }
}

export function attentionBackward(
  b: CudaBackend,
  q: View,
  k: View,
  v: View,
  out: View,
  lse: View,
  gout: View,
  gq: View,
  gk: View,
  gv: View,
  causal: boolean,
  scale: number,
): void {
  const d = dims(q, k, v);
  if (d.B * d.H === 0) return;
  const path = attentionPath(q.shape, k.shape, v.shape, [q, k, v, out, gout, gq, gk, gv].map((x) => x.storage.dtype));
  const mma = path.kind === "mma";
  const Q = operand(b, q, "in", mma);
  const K = operand(b, k, "in", mma);
  const V = operand(b, v, "in", mma);
  const O = operand(b, out, "in");
  const L = operand(b, lse, "in");
  const dO = operand(b, gout, "in", mma);
  const dQ = operand(b, gq, "out", mma);
  const dK = operand(b, gk, "out", mma);
  const dV = operand(b, gv, "out", mma);
  const rows = d.B * d.H * d.Tq;
  const delta = b.alloc("float32", Math.max(rows, 1));
  try {
    const ctx = b.ctx;
    const mod = ctx.module("attention");
    if (rows > 0 && path.kind === "mma" && mmaAligned(O.ptr, out.shape, O.strides)) {
      // attention_mma.cu's delta: D / 8 lanes per row, 16-byte loads.
      const a = pushTensor(pushTensor(ArgPack.begin(), O), dO).ptr(delta.ptr).i32(d.H).i64(d.Tq).i64(rows);
      const fn = `attn_mma_bwd_delta_${path.dtype}_d${path.D}`;
      ctx.module("attention_mma").launch(fn, gridFor(b, (rows * path.D) / 8), 256, 0, ctx.compute, a);
    } else if (rows > 0) {
      let a = pushTensor(pushTensor(ArgPack.begin(), O), dO);
      a = a.ptr(delta.ptr).i32(d.H).i64(d.Tq).i32(d.Dv).i64(rows);
      // One warp per row, 8 warps per block.
      mod.launch("attn_bwd_delta", gridFor(b, rows * 32), 256, 0, ctx.compute, a);
    }
    if (path.kind === "mma") {
      // attention_mma.cu: grid [ceil(T / 64), B * H], 128 threads, FaCfg<D>::DKDV_SMEM / DQ_SMEM.
      const mmaMod = ctx.module("attention_mma");
      const grid: [number, number] = [Math.ceil(d.Tq / FA_BM), d.B * d.H];
      const tail = (x: ArgPack) => x.i32(d.H).i64(d.Tq).i32(causal ? 1 : 0).f32(scale);
      const fnKV = `attn_mma_bwd_dkdv_${path.dtype}_d${path.D}`;
      const smemKV = prepare(b, fnKV, "dkdv", path.D, "attention_mma");
      let a = ArgPack.begin();
      for (const o of [Q, K, V, dO, L]) a = pushTensor(a, o);
      a = tail(pushTensor(pushTensor(a.ptr(delta.ptr), dK), dV));
      mmaMod.launch(fnKV, grid, FA_THREADS, smemKV, ctx.compute, a);
      const fnQ = `attn_mma_bwd_dq_${path.dtype}_d${path.D}`;
      const smemQ = prepare(b, fnQ, "dq", path.D, "attention_mma");
      a = ArgPack.begin();
      for (const o of [Q, K, V, dO, L]) a = pushTensor(a, o);
      a = tail(pushTensor(a.ptr(delta.ptr), dQ));
      mmaMod.launch(fnQ, grid, FA_THREADS, smemQ, ctx.compute, a);
      return;
    }
    const fnKV = `attn_bwd_dkdv_d${d.dmax}`;
    const smemKV = prepare(b, fnKV, "dkdv", d.dmax);
    let a = ArgPack.begin();
    for (const o of [Q, K, V, dO, L]) a = pushTensor(a, o);
    a = a.ptr(delta.ptr);
    a = pushTensor(pushTensor(a, dK), dV);
    a = a.i32(d.H).i64(d.Tq).i64(d.Tk).i32(d.D).i32(d.Dv).i32(causal ? 1 : 0).f32(scale);
    mod.launch(fnKV, [Math.ceil(d.Tk / BN), d.B * d.H], NTHREADS, smemKV, ctx.compute, a);

    const fnQ = `attn_bwd_dq_d${d.dmax}`;
    const smemQ = prepare(b, fnQ, "dq", d.dmax);
    a = ArgPack.begin();
    for (const o of [Q, K, V, dO, L]) a = pushTensor(a, o);
    a = a.ptr(delta.ptr);
    a = pushTensor(a, dQ);
    a = a.i32(d.H).i64(d.Tq).i64(d.Tk).i32(d.D).i32(d.Dv).i32(causal ? 1 : 0).f32(scale);
    mod.launch(fnQ, [Math.ceil(d.Tq / BM), d.B * d.H], NTHREADS, smemQ, ctx.compute, a);
  } finally {
    b.free(delta);
    for (const o of [dV, dK, dQ, dO, L, O, V, K, Q]) o.finish();
  }
}
