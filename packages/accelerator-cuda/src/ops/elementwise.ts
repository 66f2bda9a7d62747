/**
 * Host side of kernels/elementwise.cu: copy (with cast), fill, unary, binary, where. Views are
 * broadcast to the output shape and coalesced before launch; contiguous same-dtype copies and zero
 * fills skip the kernels and use cudaMemcpyAsync / cudaMemsetAsync.
 */
import type { BinaryOp, UnaryOp, View } from "@fulgur/tensor";
import type { CudaBackend } from "../cudaBackend";
import { check } from "../check";
import { cudaMemcpyDeviceToDevice, cudart } from "../ffi/cudart";
import { ArgPack, MAX_DIMS } from "../launch";
import { ptrOf } from "../storage";
import { THREADS, gridFor } from "./common";
import { DTYPE_CODE, itemsizeOf, needsWide } from "./dtypes";
import { coalesce, numelOf, stridesFor } from "./layout";

// Must match U_* in kernels/elementwise.cu.
export const UNARY_CODE: Readonly<Record<UnaryOp, number>> = {
  neg: 0,
  exp: 1,
  log: 2,
  sqrt: 3,
  rsqrt: 4,
  tanh: 5,
  gelu: 6,
  relu: 7,
  abs: 8,
  sigmoid: 9,
  reciprocal: 10,
  square: 11,
  add_scalar: 12,
  mul_scalar: 13,
  pow_scalar: 14,
  rsub_scalar: 15,
};

// Must match B_* in kernels/elementwise.cu.
export const BINARY_CODE: Readonly<Record<BinaryOp, number>> = {
  add: 0,
  sub: 1,
  mul: 2,
  div: 3,
  maximum: 4,
  minimum: 5,
  pow: 6,
  gelu_backward: 7,
  relu_backward: 8,
  eq: 9,
  ne: 10,
  lt: 11,
  le: 12,
  gt: 13,
  ge: 14,
};

function opCode<T extends string>(table: Readonly<Record<T, number>>, op: T, what: string): number {
  const code = table[op];
  if (code === undefined) throw new TypeError(`${what}: got ${JSON.stringify(op)}; expected one of ${Object.keys(table).join(", ")}`);
  return code;
}

function layout(out: View, inputs: readonly View[]) {
  const shape = out.shape;
  const c = coalesce(shape, [out.strides, ...inputs.map((v) => stridesFor(v, shape))]);
  if (c.shape.length > MAX_DIMS) {
    throw new RangeError(
      `elementwise op over [${shape.join(", ")}]: after merging contiguous dims ${c.shape.length} dims remain; at most ${MAX_DIMS} are supported`,
    );
  }
  return { ...c, n: numelOf(shape) };
}

export function copy(b: CudaBackend, src: View, dst: View): void {
  const L = layout(dst, [src]);
  if (L.n === 0) return;
  const sd = src.storage.dtype;
  const dd = dst.storage.dtype;
  const ctx = b.ctx;
  if (sd === dd && L.contiguous) {
    check(
      cudart().cudaMemcpyAsync(ptrOf(dst, b), ptrOf(src, b), L.n * itemsizeOf(dd), cudaMemcpyDeviceToDevice, ctx.compute.handle),
      "cudaMemcpyAsync",
      "cudart",
      "device to device copy",
    );
    return;
  }
  const args = ArgPack.begin()
    .ptr(ptrOf(src, b))
    .i32(DTYPE_CODE[sd])
    .ptr(ptrOf(dst, b))
    .i32(DTYPE_CODE[dd])
    .shape8(L.shape)
    .strides8(L.strides[1])
    .strides8(L.strides[0])
    .u64(L.n)
    .i32(L.contiguous ? 1 : 0);
  ctx.module("elementwise").launch("ew_copy", gridFor(b, L.n), THREADS, 0, ctx.compute, args);
}

export function fill(b: CudaBackend, dst: View, value: number): void {
  const L = layout(dst, []);
  if (L.n === 0) return;
  const ctx = b.ctx;
  if (L.contiguous && Object.is(value, 0)) {
    const bytes = L.n * itemsizeOf(dst.storage.dtype);
    check(cudart().cudaMemsetAsync(ptrOf(dst, b), 0, bytes, ctx.compute.handle), "cudaMemsetAsync", "cudart", "fill with 0");
    return;
  }
  const args = ArgPack.begin()
    .ptr(ptrOf(dst, b))
    .i32(DTYPE_CODE[dst.storage.dtype])
    .shape8(L.shape)
    .strides8(L.strides[0])
    .u64(L.n)
    .i32(L.contiguous ? 1 : 0)
    .f64(value);
  ctx.module("elementwise").launch("ew_fill", gridFor(b, L.n), THREADS, 0, ctx.compute, args);
}

export function unary(b: CudaBackend, op: UnaryOp, x: View, out: View, scalar = 0): void {
  const code = opCode(UNARY_CODE, op, "unary op");
  const L = layout(out, [x]);
  if (L.n === 0) return;
  const ctx = b.ctx;
  const args = ArgPack.begin()
    .ptr(ptrOf(x, b))
    .i32(DTYPE_CODE[x.storage.dtype])
    .ptr(ptrOf(out, b))
    .i32(DTYPE_CODE[out.storage.dtype])
    .shape8(L.shape)
    .strides8(L.strides[1])
    .strides8(L.strides[0])
    .u64(L.n)
    .i32(L.contiguous ? 1 : 0)
    .i32(code)
    .f64(scalar)
    .i32(needsWide(x.storage.dtype, out.storage.dtype) ? 1 : 0);
  ctx.module("elementwise").launch("ew_unary", gridFor(b, L.n), THREADS, 0, ctx.compute, args);
}

export function binary(b: CudaBackend, op: BinaryOp, a: View, c: View, out: View): void {
  const code = opCode(BINARY_CODE, op, "binary op");
  const L = layout(out, [a, c]);
  if (L.n === 0) return;
  const ctx = b.ctx;
  const args = ArgPack.begin()
    .ptr(ptrOf(a, b))
    .i32(DTYPE_CODE[a.storage.dtype])
    .ptr(ptrOf(c, b))
    .i32(DTYPE_CODE[c.storage.dtype])
    .ptr(ptrOf(out, b))
    .i32(DTYPE_CODE[out.storage.dtype])
    .shape8(L.shape)
    .strides8(L.strides[1])
    .strides8(L.strides[2])
    .strides8(L.strides[0])
    .u64(L.n)
    .i32(L.contiguous ? 1 : 0)
    .i32(code)
    .i32(needsWide(a.storage.dtype, c.storage.dtype, out.storage.dtype) ? 1 : 0);
  ctx.module("elementwise").launch("ew_binary", gridFor(b, L.n), THREADS, 0, ctx.compute, args);
}

export function where(b: CudaBackend, cond: View, a: View, c: View, out: View): void {
  const L = layout(out, [cond, a, c]);
  if (L.n === 0) return;
  const ctx = b.ctx;
  const args = ArgPack.begin()
    .ptr(ptrOf(cond, b))
    .i32(DTYPE_CODE[cond.storage.dtype])
    .ptr(ptrOf(a, b))
    .i32(DTYPE_CODE[a.storage.dtype])
    .ptr(ptrOf(c, b))
    .i32(DTYPE_CODE[c.storage.dtype])
    .ptr(ptrOf(out, b))
    .i32(DTYPE_CODE[out.storage.dtype])
    .shape8(L.shape)
    .strides8(L.strides[1])
    .strides8(L.strides[2])
    .strides8(L.strides[3])
    .strides8(L.strides[0])
    .u64(L.n)
    .i32(L.contiguous ? 1 : 0);
  ctx.module("elementwise").launch("ew_where", gridFor(b, L.n), THREADS, 0, ctx.compute, args);
}
