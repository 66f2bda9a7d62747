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
import type { Stream } from "../stream";
import { THREADS, gridFor } from "./common";
import { DTYPE_CODE, itemsizeOf, needsWide } from "./dtypes";
import type { Coalesced } from "./layout";
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

/**
 * Which elementwise kernel a launch gets, from the coalesced layout (operand 0 is the output) and
 * the operands' byte addresses:
 * - "flat": every operand contiguous over the same shape; `vec` when every address is 16-byte
 *   aligned (16-byte accesses over groups of 8 elements, scalar tail), else one element at a time.
 * - "rowBroadcast" (binary only): out and one input [R, C] with unit column stride, the other input
 *   a row vector (strides [0, 1]); `rowOperand` is the input index (1 or 2) of the row vector.
 * - "transpose" (copy only): a plain transpose of an A x B plane (src contiguous along one dim, dst
 *   along the other), optionally batched over one outer dim.
 * - "generic": the strided N-d kernels.
 */
export type ElementwisePlan =
  | { readonly kernel: "flat"; readonly vec: boolean }
  | { readonly kernel: "rowBroadcast"; readonly rowOperand: number; readonly rows: number; readonly cols: number; readonly ld: number; readonly vec: boolean }
  | {
      readonly kernel: "transpose";
      /** Extent along which src is contiguous (i) and along which dst is (j). */
      readonly A: number;
      readonly B: number;
      /** src stride of j, dst stride of i. */
      readonly ls: number;
      readonly ld: number;
      readonly batch: number;
      readonly sb: number;
      readonly db: number;
    }
  | { readonly kernel: "generic" };

/** Grid dims y and z are limited to 65535 blocks. */
const MAX_GRID_YZ = 65535;

export function planElementwise(kind: "copy" | "fill" | "unary" | "binary" | "where", L: Coalesced, ptrs: readonly bigint[]): ElementwisePlan {
  const aligned = ptrs.every((p) => p % 16n === 0n);
  if (L.contiguous) return { kernel: "flat", vec: aligned };
  const nd = L.shape.length;
  if (kind === "binary" && nd === 2) {
    const [o, a, b] = L.strides;
    const [R, C] = L.shape;
    const rowLike = (s: readonly number[]) => s[0] === 0 && s[1] === 1;
    const fullLike = (s: readonly number[]) => s[1] === 1 && s[0] === o[0] && s[0] >= C;
    if (o[1] === 1 && o[0] >= C) {
      const rowOperand = fullLike(a) && rowLike(b) ? 2 : rowLike(a) && fullLike(b) ? 1 : 0;
      if (rowOperand !== 0) return { kernel: "rowBroadcast", rowOperand, rows: R, cols: C, ld: o[0], vec: aligned && C % 8 === 0 && o[0] % 8 === 0 };
    }
  }
  if (kind === "copy" && (nd === 2 || nd === 3)) {
    const [d, s] = L.strides;
    const x = nd - 2;
    const y = nd - 1;
    // i: the dim along which src is contiguous; j: the one along which dst is.
    let i = -1;
    if (s[x] === 1 && d[y] === 1) i = x;
    else if (s[y] === 1 && d[x] === 1) i = y;
    if (i >= 0) {
      const j = i === x ? y : x;
      const A = L.shape[i];
      const B = L.shape[j];
      const ls = s[j];
      const ld = d[i];
      const batch = nd === 3 ? L.shape[0] : 1;
      const fits = Math.ceil(B / 32) <= MAX_GRID_YZ && batch <= MAX_GRID_YZ && ls > 0 && ld > 0;
      if (fits) return { kernel: "transpose", A, B, ls, ld, batch, sb: nd === 3 ? s[0] : 0, db: nd === 3 ? d[0] : 0 };
    }
  }
  return { kernel: "generic" };
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

/**
 * dst = src (cast to dst's dtype). A caller that orders its own stream (copyBeside) may pass one for
 * the flat copies; the other layouts run on compute, whose order the caller's stream follows anyway.
 */
export function copy(b: CudaBackend, src: View, dst: View, stream: Stream = b.ctx.compute): void {
  const L = layout(dst, [src]);
  if (L.n === 0) return;
  const sd = src.storage.dtype;
  const dd = dst.storage.dtype;
  const ctx = b.ctx;
  if (sd === dd && L.contiguous) {
    check(
      cudart().cudaMemcpyAsync(ptrOf(dst, b), ptrOf(src, b), L.n * itemsizeOf(dd), cudaMemcpyDeviceToDevice, stream.handle),
      "cudaMemcpyAsync",
      "cudart",
      "device to device copy",
    );
    return;
  }
  const sp = ptrOf(src, b);
  const dp = ptrOf(dst, b);
  const plan = planElementwise("copy", L, [dp, sp]);
  const mod = ctx.module("elementwise");
  if (plan.kernel === "flat") {
    const wide = needsWide(sd, dd) && sd !== dd;
    const args = ArgPack.begin().ptr(sp).i32(DTYPE_CODE[sd]).ptr(dp).i32(DTYPE_CODE[dd]).u64(L.n).i32(plan.vec ? 1 : 0).i32(wide ? 1 : 0);
    mod.launch(wide ? "ew_copy_flat_wide" : "ew_copy_flat", gridFor(b, plan.vec ? Math.ceil(L.n / 8) : L.n), THREADS, 0, stream, args);
    return;
  }
  if (plan.kernel === "transpose") {
    const args = ArgPack.begin()
      .ptr(sp)
      .i32(DTYPE_CODE[sd])
      .ptr(dp)
      .i32(DTYPE_CODE[dd])
      .i64(plan.A)
      .i64(plan.B)
      .i64(plan.ls)
      .i64(plan.ld)
      .i64(plan.sb)
      .i64(plan.db);
    // 32x32 tiles, 32x8 threads (TILE in elementwise.cu).
    mod.launch("ew_transpose", [Math.ceil(plan.A / 32), Math.ceil(plan.B / 32), plan.batch], [32, 8], 0, ctx.compute, args);
    return;
  }
  const args = ArgPack.begin()
    .ptr(sp)
    .i32(DTYPE_CODE[sd])
    .ptr(dp)
    .i32(DTYPE_CODE[dd])
    .shape8(L.shape)
    .strides8(L.strides[1])
    .strides8(L.strides[0])
    .u64(L.n)
    .i32(L.contiguous ? 1 : 0);
  mod.launch("ew_copy", gridFor(b, L.n), THREADS, 0, ctx.compute, args);
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
  const dp = ptrOf(dst, b);
  const plan = planElementwise("fill", L, [dp]);
  if (plan.kernel === "flat") {
    const args = ArgPack.begin().ptr(dp).i32(DTYPE_CODE[dst.storage.dtype]).u64(L.n).i32(plan.vec ? 1 : 0).f64(value);
    ctx.module("elementwise").launch("ew_fill_flat", gridFor(b, plan.vec ? Math.ceil(L.n / 8) : L.n), THREADS, 0, ctx.compute, args);
    return;
  }
  const args = ArgPack.begin()
    .ptr(dp)
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
  const xp = ptrOf(x, b);
  const op_ = ptrOf(out, b);
  const wide = needsWide(x.storage.dtype, out.storage.dtype) ? 1 : 0;
  const plan = planElementwise("unary", L, [op_, xp]);
  if (plan.kernel === "flat") {
    const args = ArgPack.begin()
      .ptr(xp)
      .i32(DTYPE_CODE[x.storage.dtype])
      .ptr(op_)
      .i32(DTYPE_CODE[out.storage.dtype])
      .u64(L.n)
      .i32(code)
      .f64(scalar)
      .i32(wide)
      .i32(plan.vec ? 1 : 0);
    ctx.module("elementwise").launch(wide ? "ew_unary_flat_wide" : "ew_unary_flat", gridFor(b, plan.vec ? Math.ceil(L.n / 8) : L.n), THREADS, 0, ctx.compute, args);
    return;
  }
  const args = ArgPack.begin()
    .ptr(xp)
    .i32(DTYPE_CODE[x.storage.dtype])
    .ptr(op_)
    .i32(DTYPE_CODE[out.storage.dtype])
    .shape8(L.shape)
    .strides8(L.strides[1])
    .strides8(L.strides[0])
    .u64(L.n)
    .i32(L.contiguous ? 1 : 0)
    .i32(code)
    .f64(scalar)
    .i32(wide);
  ctx.module("elementwise").launch("ew_unary", gridFor(b, L.n), THREADS, 0, ctx.compute, args);
}

export function binary(b: CudaBackend, op: BinaryOp, a: View, c: View, out: View): void {
  const code = opCode(BINARY_CODE, op, "binary op");
  const L = layout(out, [a, c]);
  if (L.n === 0) return;
  const ctx = b.ctx;
  const ap = ptrOf(a, b);
  const cp = ptrOf(c, b);
  const op_ = ptrOf(out, b);
  const [adt, cdt, odt] = [DTYPE_CODE[a.storage.dtype], DTYPE_CODE[c.storage.dtype], DTYPE_CODE[out.storage.dtype]];
  const wide = needsWide(a.storage.dtype, c.storage.dtype, out.storage.dtype) ? 1 : 0;
  const plan = planElementwise("binary", L, [op_, ap, cp]);
  const mod = ctx.module("elementwise");
  if (plan.kernel === "flat") {
    const args = ArgPack.begin().ptr(ap).i32(adt).ptr(cp).i32(cdt).ptr(op_).i32(odt).u64(L.n).i32(code).i32(wide).i32(plan.vec ? 1 : 0);
    mod.launch(wide ? "ew_binary_flat_wide" : "ew_binary_flat", gridFor(b, plan.vec ? Math.ceil(L.n / 8) : L.n), THREADS, 0, ctx.compute, args);
    return;
  }
  if (plan.kernel === "rowBroadcast") {
    const rowIsA = plan.rowOperand === 1;
    const [fp, fdt, rp, rdt] = rowIsA ? [cp, cdt, ap, adt] : [ap, adt, cp, cdt];
    const args = ArgPack.begin()
      .ptr(fp)
      .i32(fdt)
      .ptr(rp)
      .i32(rdt)
      .ptr(op_)
      .i32(odt)
      .u64(plan.rows)
      .u64(plan.cols)
      .u64(plan.ld)
      .i32(code)
      .i32(rowIsA ? 1 : 0)
      .i32(wide)
      .i32(plan.vec ? 1 : 0);
    mod.launch("ew_binary_rowbc", rowBroadcastGrid(b, plan.rows, plan.vec ? plan.cols / 8 : plan.cols), THREADS, 0, ctx.compute, args);
    return;
  }
  const args = ArgPack.begin()
    .ptr(ap)
    .i32(adt)
    .ptr(cp)
    .i32(cdt)
    .ptr(op_)
    .i32(DTYPE_CODE[out.storage.dtype])
    .shape8(L.shape)
    .strides8(L.strides[1])
    .strides8(L.strides[2])
    .strides8(L.strides[0])
    .u64(L.n)
    .i32(L.contiguous ? 1 : 0)
    .i32(code)
    .i32(wide);
  mod.launch("ew_binary", gridFor(b, L.n), THREADS, 0, ctx.compute, args);
}

export function where(b: CudaBackend, cond: View, a: View, c: View, out: View): void {
  const L = layout(out, [cond, a, c]);
  if (L.n === 0) return;
  const ctx = b.ctx;
  const ptrs = [ptrOf(out, b), ptrOf(cond, b), ptrOf(a, b), ptrOf(c, b)];
  const plan = planElementwise("where", L, ptrs);
  if (plan.kernel === "flat") {
    const args = ArgPack.begin()
      .ptr(ptrs[1])
      .i32(DTYPE_CODE[cond.storage.dtype])
      .ptr(ptrs[2])
      .i32(DTYPE_CODE[a.storage.dtype])
      .ptr(ptrs[3])
      .i32(DTYPE_CODE[c.storage.dtype])
      .ptr(ptrs[0])
      .i32(DTYPE_CODE[out.storage.dtype])
      .u64(L.n)
      .i32(plan.vec ? 1 : 0);
    ctx.module("elementwise").launch("ew_where_flat", gridFor(b, plan.vec ? Math.ceil(L.n / 8) : L.n), THREADS, 0, ctx.compute, args);
    return;
  }
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

/** Blocks for ew_binary_rowbc: x over the row's (vector) groups, y over rows, about gridFor's total. */
export function rowBroadcastGrid(b: CudaBackend, rows: number, groups: number): [number, number] {
  const cap = b.ctx.props.multiProcessorCount * 32;
  const bx = Math.max(1, Math.min(Math.ceil(groups / THREADS), cap));
  const by = Math.max(1, Math.min(rows, MAX_GRID_YZ, Math.floor(cap / bx)));
  return [bx, by];
}
