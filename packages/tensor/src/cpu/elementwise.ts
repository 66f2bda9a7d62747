/**
 * Elementwise kernels: copy (with cast), fill, unary, binary and where.
 *
 * Each op walks rows (see `RowWalker`) and dispatches once per row to a loop specialised for the
 * op, so the per-element cost is one typed-array load/compute/store. Operands stored as numbers
 * (float32/float64/int32) are read and written in place, the typed-array store doing the float32
 * rounding or int32 truncation; 16-bit operands are decoded to a float64 row first and encoded
 * back afterwards (round to nearest even).
 */
import type { BinaryOp, UnaryOp, View } from "../backend";
import type { HostArray } from "../dtype";
import { f32ToBf16Bits, f32ToF16Bits } from "../dtype";
import { dataOf } from "./storage";
import type { FloatArray, NumArray } from "./strided";
import { RowWalker, coalesce, decodeRow, encodeRow, is16, stridesFor } from "./strided";

const GELU_C = Math.sqrt(2 / Math.PI);
const GELU_A = 0.044715;
// 0.5 * (1 + tanh(u)) = sigmoid(2u): the same function with one Math.exp instead of Math.tanh,
// which V8 evaluates about twice as slowly; this is the MLP's hottest elementwise op.
const GELU_2C = 2 * GELU_C;

/** Tanh-form GELU, 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), evaluated as x * sigmoid(2u). */
export function gelu(x: number): number {
  return x / (1 + Math.exp(-GELU_2C * (x + GELU_A * x * x * x)));
}

/** d/dx of `gelu`: s + 2 x s (1 - s) sqrt(2/pi) (1 + 3 * 0.044715 x^2) with s = sigmoid(2u). */
export function geluGrad(x: number): number {
  const x2 = x * x;
  const s = 1 / (1 + Math.exp(-GELU_2C * (x + GELU_A * x2 * x)));
  return s + 2 * x * s * (1 - s) * GELU_C * (1 + 3 * GELU_A * x2);
}

/** Float64 row scratch for decoded 16-bit inputs or outputs awaiting encoding. */
function rowBuffer(n: number): Float64Array {
  return new Float64Array(Math.max(n, 1));
}

// dst[od + i*ds] = src[os + i*ss] for a whole row; numeric conversion by the typed-array store.
function copyRow(n: number, src: HostArray, os: number, ss: number, dst: HostArray, od: number, ds: number): void {
  if (ss === 1 && ds === 1) {
    if (n >= 32 && src.constructor === dst.constructor) dst.set(src.subarray(os, os + n) as never, od);
    else for (let i = 0; i < n; i++) dst[od + i] = src[os + i];
  } else {
    for (let i = 0; i < n; i++, os += ss, od += ds) dst[od] = src[os];
  }
}

// Rows per tile of a transposing copy: enough consecutive elements per cache line touched.
const TILE = 16;

/**
 * Transposing copy (the innermost dim is contiguous for one side only): walk TILE lines of the
 * second-innermost dim together so both sides touch whole cache lines instead of one element per
 * line. Returns false when the layout is not such a transpose.
 */
function copyTransposed(
  srcOffset: number,
  srcStrides: readonly number[],
  dst: View,
  sd: HostArray,
  dd: HostArray,
): boolean {
  const c = coalesce(dst.shape, [dst.strides, srcStrides]);
  const nd = c.shape.length;
  if (nd < 2) return false;
  const [dj, sj] = c.strides[nd - 1];
  const [di, si] = c.strides[nd - 2];
  if (!((Math.abs(sj) > 1 && Math.abs(si) === 1) || (Math.abs(dj) > 1 && Math.abs(di) === 1))) return false;
  const I = c.shape[nd - 2];
  const J = c.shape[nd - 1];
  const outerShape = c.shape.slice(0, nd - 2).concat([1]);
  const w = new RowWalker(
    outerShape,
    [c.strides.slice(0, nd - 2).map((s) => s[0]).concat([0]), c.strides.slice(0, nd - 2).map((s) => s[1]).concat([0])],
    [dst.offset, srcOffset],
    "last",
  );
  for (let r = 0; r < w.rows; r++, w.next()) {
    const d0 = w.offsets[0];
    const s0 = w.offsets[1];
    for (let i0 = 0; i0 < I; i0 += TILE) {
      const i1 = Math.min(I, i0 + TILE);
      for (let j = 0; j < J; j++) {
        let d = d0 + i0 * di + j * dj;
        let s = s0 + i0 * si + j * sj;
        for (let i = i0; i < i1; i++, d += di, s += si) dd[d] = sd[s];
      }
    }
  }
  return true;
}

export function copy(src: View, dst: View): void {
  const shape = dst.shape;
  const srcStrides = stridesFor(src, shape);
  const w = new RowWalker(shape, [dst.strides, srcStrides], [dst.offset, src.offset]);
  if (w.rows === 0) return;
  const sd = dataOf(src);
  const dd = dataOf(dst);
  const st = src.storage.dtype;
  const dt = dst.storage.dtype;
  if ((st === dt || (!is16(st) && !is16(dt))) && w.n > 1 && copyTransposed(src.offset, srcStrides, dst, sd, dd)) return;
  const n = w.n;
  const [di, si] = w.inner;
  // Same dtype moves storage words untouched (16-bit bits included); numeric dtypes convert on store.
  if (st === dt || (!is16(st) && !is16(dt))) {
    for (let r = 0; r < w.rows; r++, w.next()) copyRow(n, sd, w.offsets[1], si, dd, w.offsets[0], di);
    return;
  }
  const buf = rowBuffer(n);
  for (let r = 0; r < w.rows; r++, w.next()) {
    decodeRow(sd, st, w.offsets[1], si, n, buf, 0);
    encodeRow(buf, 0, n, dd, dt, w.offsets[0], di);
  }
}

export function fill(dst: View, value: number): void {
  const w = new RowWalker(dst.shape, [dst.strides], [dst.offset]);
  const dd = dataOf(dst);
  const dt = dst.storage.dtype;
  const v = dt === "bfloat16" ? f32ToBf16Bits(value) : dt === "float16" ? f32ToF16Bits(value) : value;
  const n = w.n;
  const s = w.inner[0];
  for (let r = 0; r < w.rows; r++, w.next()) {
    const o = w.offsets[0];
    if (s === 1) dd.fill(v, o, o + n);
    else for (let i = 0, p = o; i < n; i++, p += s) dd[p] = v;
  }
}

function unaryRow(
  op: UnaryOp,
  n: number,
  x: NumArray,
  xo: number,
  xs: number,
  o: NumArray,
  oo: number,
  os: number,
  s: number,
): void {
  switch (op) {
    case "neg":
      for (let i = 0; i < n; i++, xo += xs, oo += os) o[oo] = -x[xo];
      return;
    case "exp":
      for (let i = 0; i < n; i++, xo += xs, oo += os) o[oo] = Math.exp(x[xo]);
      return;
    case "log":
      for (let i = 0; i < n; i++, xo += xs, oo += os) o[oo] = Math.log(x[xo]);
      return;
    case "sqrt":
      for (let i = 0; i < n; i++, xo += xs, oo += os) o[oo] = Math.sqrt(x[xo]);
      return;
    case "rsqrt":
      for (let i = 0; i < n; i++, xo += xs, oo += os) o[oo] = 1 / Math.sqrt(x[xo]);
      return;
    case "tanh":
      for (let i = 0; i < n; i++, xo += xs, oo += os) o[oo] = Math.tanh(x[xo]);
      return;
    case "gelu":
      for (let i = 0; i < n; i++, xo += xs, oo += os) {
        const v = x[xo];
        o[oo] = v / (1 + Math.exp(-GELU_2C * (v + GELU_A * v * v * v)));
      }
      return;
    case "relu":
      // NaN passes through, as in PyTorch.
      for (let i = 0; i < n; i++, xo += xs, oo += os) {
        const v = x[xo];
        o[oo] = v > 0 || v !== v ? v : 0;
      }
      return;
    case "abs":
      for (let i = 0; i < n; i++, xo += xs, oo += os) o[oo] = Math.abs(x[xo]);
      return;
    case "sigmoid":
      for (let i = 0; i < n; i++, xo += xs, oo += os) o[oo] = 1 / (1 + Math.exp(-x[xo]));
      return;
    case "reciprocal":
      for (let i = 0; i < n; i++, xo += xs, oo += os) o[oo] = 1 / x[xo];
      return;
    case "square":
      for (let i = 0; i < n; i++, xo += xs, oo += os) {
        const v = x[xo];
        o[oo] = v * v;
      }
      return;
    case "add_scalar":
      for (let i = 0; i < n; i++, xo += xs, oo += os) o[oo] = x[xo] + s;
      return;
    case "mul_scalar":
      for (let i = 0; i < n; i++, xo += xs, oo += os) o[oo] = x[xo] * s;
      return;
    case "pow_scalar":
      if (s === 2) {
        for (let i = 0; i < n; i++, xo += xs, oo += os) {
          const v = x[xo];
          o[oo] = v * v;
        }
      } else {
        for (let i = 0; i < n; i++, xo += xs, oo += os) o[oo] = Math.pow(x[xo], s);
      }
      return;
    case "rsub_scalar":
      for (let i = 0; i < n; i++, xo += xs, oo += os) o[oo] = s - x[xo];
      return;
    default:
      throw new Error(`cpu backend: unknown unary op "${op as string}"`);
  }
}

function binaryRow(
  op: BinaryOp,
  n: number,
  a: NumArray,
  ao: number,
  as: number,
  b: NumArray,
  bo: number,
  bs: number,
  o: NumArray,
  oo: number,
  os: number,
): void {
  switch (op) {
    case "add":
      for (let i = 0; i < n; i++, ao += as, bo += bs, oo += os) o[oo] = a[ao] + b[bo];
      return;
    case "sub":
      for (let i = 0; i < n; i++, ao += as, bo += bs, oo += os) o[oo] = a[ao] - b[bo];
      return;
    case "mul":
      for (let i = 0; i < n; i++, ao += as, bo += bs, oo += os) o[oo] = a[ao] * b[bo];
      return;
    case "div":
      for (let i = 0; i < n; i++, ao += as, bo += bs, oo += os) o[oo] = a[ao] / b[bo];
      return;
    case "maximum":
      for (let i = 0; i < n; i++, ao += as, bo += bs, oo += os) o[oo] = Math.max(a[ao], b[bo]);
      return;
    case "minimum":
      for (let i = 0; i < n; i++, ao += as, bo += bs, oo += os) o[oo] = Math.min(a[ao], b[bo]);
      return;
    case "pow":
      for (let i = 0; i < n; i++, ao += as, bo += bs, oo += os) o[oo] = Math.pow(a[ao], b[bo]);
      return;
    case "gelu_backward":
      for (let i = 0; i < n; i++, ao += as, bo += bs, oo += os) o[oo] = b[bo] * geluGrad(a[ao]);
      return;
    case "relu_backward":
      for (let i = 0; i < n; i++, ao += as, bo += bs, oo += os) o[oo] = a[ao] > 0 ? b[bo] : 0;
      return;
    case "eq":
      for (let i = 0; i < n; i++, ao += as, bo += bs, oo += os) o[oo] = a[ao] === b[bo] ? 1 : 0;
      return;
    case "ne":
      for (let i = 0; i < n; i++, ao += as, bo += bs, oo += os) o[oo] = a[ao] !== b[bo] ? 1 : 0;
      return;
    case "lt":
      for (let i = 0; i < n; i++, ao += as, bo += bs, oo += os) o[oo] = a[ao] < b[bo] ? 1 : 0;
      return;
    case "le":
      for (let i = 0; i < n; i++, ao += as, bo += bs, oo += os) o[oo] = a[ao] <= b[bo] ? 1 : 0;
      return;
    case "gt":
      for (let i = 0; i < n; i++, ao += as, bo += bs, oo += os) o[oo] = a[ao] > b[bo] ? 1 : 0;
      return;
    case "ge":
      for (let i = 0; i < n; i++, ao += as, bo += bs, oo += os) o[oo] = a[ao] >= b[bo] ? 1 : 0;
      return;
    default:
      throw new Error(`cpu backend: unknown binary op "${op as string}"`);
  }
}

/**
 * Per-operand row access for ops with numeric kernels: `arr`/`off`/`stride` of the current row,
 * pointing at a decoded float64 buffer for 16-bit inputs and at an encode-later buffer for 16-bit outputs.
 */
class Operand {
  readonly data: HostArray;
  readonly wide: boolean;
  readonly buf: FloatArray;
  constructor(
    readonly view: View,
    n: number,
  ) {
    this.data = dataOf(view);
    this.wide = is16(view.storage.dtype);
    this.buf = this.wide ? rowBuffer(n) : (this.data as NumArray as FloatArray);
  }
  /** Array the kernel reads this input's row from (decoding first if needed). */
  load(n: number, off: number, stride: number): NumArray {
    if (!this.wide) return this.data as NumArray;
    decodeRow(this.data, this.view.storage.dtype, off, stride, n, this.buf, 0);
    return this.buf;
  }
  /** Array the kernel writes this output's row to. */
  target(): NumArray {
    return this.wide ? this.buf : (this.data as NumArray);
  }
  store(n: number, off: number, stride: number): void {
    if (this.wide) encodeRow(this.buf, 0, n, this.data, this.view.storage.dtype, off, stride);
  }
}

export function unary(op: UnaryOp, x: View, out: View, scalar = 0): void {
  const shape = out.shape;
  const w = new RowWalker(shape, [out.strides, stridesFor(x, shape)], [out.offset, x.offset]);
  if (w.rows === 0) return;
  const n = w.n;
  const X = new Operand(x, n);
  const O = new Operand(out, n);
  const [os, xs] = w.inner;
  const xrs = X.wide ? 1 : xs;
  const ors = O.wide ? 1 : os;
  for (let r = 0; r < w.rows; r++, w.next()) {
    const [oo, xo] = w.offsets;
    const xa = X.load(n, xo, xs);
    unaryRow(op, n, xa, X.wide ? 0 : xo, xrs, O.target(), O.wide ? 0 : oo, ors, scalar);
    O.store(n, oo, os);
  }
}

export function binary(op: BinaryOp, a: View, b: View, out: View): void {
  const shape = out.shape;
  const w = new RowWalker(
    shape,
    [out.strides, stridesFor(a, shape), stridesFor(b, shape)],
    [out.offset, a.offset, b.offset],
  );
  if (w.rows === 0) return;
  const n = w.n;
  const A = new Operand(a, n);
  const B = new Operand(b, n);
  const O = new Operand(out, n);
  const [os, as, bs] = w.inner;
  for (let r = 0; r < w.rows; r++, w.next()) {
    const [oo, ao, bo] = w.offsets;
    const aa = A.load(n, ao, as);
    const ba = B.load(n, bo, bs);
    binaryRow(
      op,
      n,
      aa,
      A.wide ? 0 : ao,
      A.wide ? 1 : as,
      ba,
      B.wide ? 0 : bo,
      B.wide ? 1 : bs,
      O.target(),
      O.wide ? 0 : oo,
      O.wide ? 1 : os,
    );
    O.store(n, oo, os);
  }
}

export function where(cond: View, a: View, b: View, out: View): void {
  const shape = out.shape;
  const w = new RowWalker(
    shape,
    [out.strides, stridesFor(cond, shape), stridesFor(a, shape), stridesFor(b, shape)],
    [out.offset, cond.offset, a.offset, b.offset],
  );
  if (w.rows === 0) return;
  const n = w.n;
  const C = new Operand(cond, n);
  const A = new Operand(a, n);
  const B = new Operand(b, n);
  const O = new Operand(out, n);
  const [os0, cs0, as0, bs0] = w.inner;
  const cs = C.wide ? 1 : cs0;
  const as = A.wide ? 1 : as0;
  const bs = B.wide ? 1 : bs0;
  const os = O.wide ? 1 : os0;
  for (let r = 0; r < w.rows; r++, w.next()) {
    const [oo0, co0, ao0, bo0] = w.offsets;
    const c = C.load(n, co0, cs0);
    const x = A.load(n, ao0, as0);
    const y = B.load(n, bo0, bs0);
    const o = O.target();
    let co = C.wide ? 0 : co0;
    let ao = A.wide ? 0 : ao0;
    let bo = B.wide ? 0 : bo0;
    let oo = O.wide ? 0 : oo0;
    for (let i = 0; i < n; i++, co += cs, ao += as, bo += bs, oo += os) o[oo] = c[co] !== 0 ? x[ao] : y[bo];
    O.store(n, oo0, os0);
  }
}
