/**
 * Host side of kernels/attention.cu: checks shapes, stages operands whose last dim is not
 * contiguous, picks the head-dim instantiation (64 or 128) and its shared-memory budget, and queues
 * the forward kernel or the three backward kernels (delta, dK/dV, dQ).
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

/** struct AttnTensor { u64 ptr; i64 sb, sh, st; int dt; int pad; } (40 bytes). */
export const ATTN_TENSOR_BYTES = 40;

interface Operand {
  readonly ptr: Ptr;
  readonly strides: readonly number[];
  readonly dtype: number;
  finish(): void;
}

/** A [B, H, T, D] view usable by the kernels (last dim contiguous), staged through a temporary if not. */
function operand(b: CudaBackend, v: View, mode: "in" | "out"): Operand {
  const last = v.shape.length - 1;
  const dtype = DTYPE_CODE[v.storage.dtype];
  if (v.shape.length !== 4 && v.shape.length !== 3) throw new RangeError(`attention operand must be [B, H, T, D], got [${v.shape.join(", ")}]`);
  if (v.shape.length === 3 || v.shape[last] === 1 || v.strides[last] === 1) {
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

function prepare(b: CudaBackend, fn: string, kernel: "fwd" | "dkdv" | "dq", dmax: 64 | 128): number {
  const bytes = attentionSharedBytes(kernel, dmax);
  const ctx = b.ctx;
  if (bytes > ctx.props.maxSharedMemoryPerBlockOptin) {
    throw new RangeError(
      `attention: ${fn} needs ${bytes} bytes of shared memory per block; ${ctx.label} allows ${ctx.props.maxSharedMemoryPerBlockOptin}`,
    );
  }
  if (bytes > 48 * 1024) ctx.module("attention").allowSharedMemory(fn, bytes);
  return bytes;
}

export function attention(b: CudaBackend, q: View, k: View, v: View, out: View, lse: View, causal: boolean, scale: number): void {
  const d = dims(q, k, v);
  if (d.B * d.H * d.Tq === 0) return;
  const ops = [operand(b, q, "in"), operand(b, k, "in"), operand(b, v, "in"), operand(b, out, "out"), operand(b, lse, "out")];
  try {
    const fn = `attn_fwd_d${d.dmax}`;
    const smem = prepare(b, fn, "fwd", d.dmax);
    let a = ArgPack.begin();
    for (const o of ops) a = pushTensor(a, o);
    a = a.i32(d.H).i64(d.Tq).i64(d.Tk).i32(d.D).i32(d.Dv).i32(causal ? 1 : 0).f32(scale);
    const ctx = b.ctx;
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
  const Q = operand(b, q, "in");
  const K = operand(b, k, "in");
  const V = operand(b, v, "in");
  const O = operand(b, out, "in");
  const L = operand(b, lse, "in");
  const dO = operand(b, gout, "in");
  const dQ = operand(b, gq, "out");
  const dK = operand(b, gk, "out");
  const dV = operand(b, gv, "out");
  const rows = d.B * d.H * d.Tq;
  const delta = b.alloc("float32", Math.max(rows, 1));
  try {
    const ctx = b.ctx;
    const mod = ctx.module("attention");
    if (rows > 0) {
      let a = pushTensor(pushTensor(ArgPack.begin(), O), dO);
      a = a.ptr(delta.ptr).i32(d.H).i64(d.Tq).i32(d.Dv).i64(rows);
      // One warp per row, 8 warps per block.
      mod.launch("attn_bwd_delta", gridFor(b, rows * 32), 256, 0, ctx.compute, a);
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
