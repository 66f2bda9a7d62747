/**
 * Walking strided views and moving elements between storage format and numbers.
 *
 * Every CPU kernel works row by row: a `RowWalker` steps an odometer over the outer dimensions
 * (after merging dimensions that are contiguous with each other, so a contiguous tensor is one
 * long row) and the kernel runs a tight loop over the inner row with integer offsets. That keeps
 * per-element work free of index arithmetic, closures and allocation.
 *
 * 16-bit floats are decoded through 64Ki-entry lookup tables (one array load per element instead
 * of a bit-cast through a scratch word) and encoded a row at a time with the same
 * round-to-nearest-even rule as `dtype.ts`.
 */
import type { View } from "../backend";
import type { DType, HostArray } from "../dtype";
import { allocHost, bf16BitsToF32, f16BitsToF32, f32ToF16Bits } from "../dtype";
import { dataOf } from "./storage";

/** Host arrays whose elements are numbers as they are (no 16-bit decoding needed). */
export type NumArray = Float32Array | Float64Array | Int32Array;
/** Scratch rows kernels compute in. */
export type FloatArray = Float32Array | Float64Array;

export function is16(dtype: DType): boolean {
  return dtype === "bfloat16" || dtype === "float16";
}

let bf16Table: Float32Array | null = null;
let f16Table: Float32Array | null = null;

/** Decode table for a 16-bit dtype (raw bits -> value), or null for dtypes stored as numbers. */
export function lutFor(dtype: DType): Float32Array | null {
  if (dtype === "bfloat16") {
    if (bf16Table === null) {
      bf16Table = new Float32Array(65536);
      for (let i = 0; i < 65536; i++) bf16Table[i] = bf16BitsToF32(i);
    }
    return bf16Table;
  }
  if (dtype === "float16") {
    if (f16Table === null) {
      f16Table = new Float32Array(65536);
      for (let i = 0; i < 65536; i++) f16Table[i] = f16BitsToF32(i);
    }
    return f16Table;
  }
  return null;
}

/** Strides reading `view` as `shape` (numpy broadcasting), or its own strides when shapes agree. */
export function stridesFor(view: View, shape: readonly number[]): readonly number[] {
  const vs = view.shape;
  if (vs.length === shape.length) {
    let same = true;
    for (let i = 0; i < vs.length; i++) if (vs[i] !== shape[i]) same = false;
    if (same) return view.strides;
  }
  const out = new Array<number>(shape.length).fill(0);
  const off = shape.length - vs.length;
  for (let i = 0; i < vs.length; i++) {
    if (vs[i] === shape[i + off]) out[i + off] = view.strides[i];
    else if (vs[i] !== 1) throw new RangeError(`cpu backend: cannot broadcast [${vs.join(", ")}] to [${shape.join(", ")}]`);
  }
  return out;
}

export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (let i = 0; i < shape.length; i++) n *= shape[i];
  return n;
}

/**
 * Drops size-1 dims and merges neighbouring dims across which every operand is contiguous.
 * Returns the merged shape and, per merged dim, each operand's stride (strides[d][k]).
 */
export function coalesce(
  shape: readonly number[],
  strides: readonly (readonly number[])[],
): { shape: number[]; strides: number[][] } {
  const nops = strides.length;
  const cShape: number[] = [];
  const cStrides: number[][] = [];
  for (let d = 0; d < shape.length; d++) {
    const size = shape[d];
    if (size === 1) continue;
    const m = cShape.length - 1;
    let merge = m >= 0;
    for (let k = 0; k < nops && merge; k++) if (cStrides[m][k] !== strides[k][d] * size) merge = false;
    if (merge) {
      cShape[m] *= size;
      for (let k = 0; k < nops; k++) cStrides[m][k] = strides[k][d];
    } else {
      cShape.push(size);
      const st = new Array<number>(nops);
      for (let k = 0; k < nops; k++) st[k] = strides[k][d];
      cStrides.push(st);
    }
  }
  return { shape: cShape, strides: cStrides };
}

/**
 * Odometer over the rows of a set of equally shaped strided operands.
 *
 * mode "coalesce": size-1 dims are dropped and neighbouring dims merged when every operand is
 * contiguous across them; the innermost merged dim is the row. mode "last": the last dim is the
 * row whatever its size (row-wise ops such as softmax), only the outer dims are merged.
 * After construction `offsets` holds the first row's start per operand; `next()` advances all.
 */
export class RowWalker {
  /** Number of rows. */
  readonly rows: number;
  /** Row length. */
  readonly n: number;
  /** Per-operand stride along the row. */
  readonly inner: number[];
  /** Per-operand offset of the current row. */
  readonly offsets: number[];
  private readonly nops: number;
  private readonly shape: number[];
  /** strides[d * nops + k]: operand k's stride along outer dim d. */
  private readonly strides: number[];
  private readonly idx: number[];

  constructor(
    shape: readonly number[],
    strides: readonly (readonly number[])[],
    offsets: readonly number[],
    mode: "coalesce" | "last" = "coalesce",
  ) {
    const nops = strides.length;
    this.nops = nops;
    this.offsets = offsets.slice();
    const total = numelOf(shape);
    const last = shape.length - 1;
    const outer = mode === "last" ? shape.slice(0, last) : shape;
    const c = coalesce(outer, mode === "last" ? strides.map((s) => s.slice(0, last)) : strides);
    const cShape = c.shape;
    const cStrides = c.strides;
    if (mode === "last" && last >= 0) {
      this.n = shape[last];
      this.inner = strides.map((s) => s[last]);
    } else if (cShape.length > 0) {
      this.n = cShape.pop()!;
      this.inner = cStrides.pop()!;
    } else {
      this.n = 1;
      this.inner = new Array<number>(nops).fill(0);
    }
    this.rows = this.n === 0 ? 0 : total / this.n;
    this.shape = cShape;
    this.strides = [];
    for (const st of cStrides) this.strides.push(...st);
    this.idx = new Array<number>(cShape.length).fill(0);
  }

  next(): void {
    const nops = this.nops;
    const offsets = this.offsets;
    for (let d = this.shape.length - 1; d >= 0; d--) {
      const base = d * nops;
      for (let k = 0; k < nops; k++) offsets[k] += this.strides[base + k];
      if (++this.idx[d] < this.shape[d]) return;
      this.idx[d] = 0;
      const size = this.shape[d];
      for (let k = 0; k < nops; k++) offsets[k] -= this.strides[base + k] * size;
    }
  }
}

/** dst[dOff + i] = value of src[off + i*stride] for i < n, decoding 16-bit floats. */
export function decodeRow(
  src: HostArray,
  dtype: DType,
  off: number,
  stride: number,
  n: number,
  dst: FloatArray,
  dOff: number,
): void {
  const lut = lutFor(dtype);
  if (lut === null) {
    const s = src as NumArray;
    if (stride === 1) for (let i = 0; i < n; i++) dst[dOff + i] = s[off + i];
    else for (let i = 0; i < n; i++, off += stride) dst[dOff + i] = s[off];
  } else {
    for (let i = 0; i < n; i++, off += stride) dst[dOff + i] = lut[src[off]];
  }
}

// Row-sized scratch for bf16 encoding: the float32 rounding happens on the store into f32Row,
// the bf16 rounding on its bits.
let f32Row = new Float32Array(256);
let u32Row = new Uint32Array(f32Row.buffer);

/** dst[off + i*stride] = encode(src[sOff + i]) for i < n; int32 truncates, 16-bit floats round to nearest even. */
export function encodeRow(
  src: FloatArray,
  sOff: number,
  n: number,
  dst: HostArray,
  dtype: DType,
  off: number,
  stride: number,
): void {
  if (dtype === "bfloat16") {
    if (f32Row.length < n) {
      f32Row = new Float32Array(n);
      u32Row = new Uint32Array(f32Row.buffer);
    }
    const f = f32Row;
    const u = u32Row;
    for (let i = 0; i < n; i++) f[i] = src[sOff + i];
    for (let i = 0; i < n; i++, off += stride) {
      const bits = u[i];
      dst[off] =
        (bits & 0x7f800000) === 0x7f800000 && (bits & 0x007fffff) !== 0
          ? ((bits >>> 16) | 0x0040) & 0xffff
          : ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
    }
  } else if (dtype === "float16") {
    for (let i = 0; i < n; i++, off += stride) dst[off] = f32ToF16Bits(src[sOff + i]);
  } else if (stride === 1) {
    // Typed-array stores do the float32 rounding and int32 truncation.
    for (let i = 0; i < n; i++) dst[off + i] = src[sOff + i];
  } else {
    for (let i = 0; i < n; i++, off += stride) dst[off] = src[sOff + i];
  }
}

/** Value of one element, decoding 16-bit floats. */
export function readAt(data: HostArray, dtype: DType, i: number): number {
  if (dtype === "bfloat16") return bf16BitsToF32(data[i]);
  if (dtype === "float16") return f16BitsToF32(data[i]);
  return data[i];
}

/** A view's elements as float64 values in row-major order: for small operands (bias, gamma, lse). */
export function loadView(view: View): Float64Array {
  const out = new Float64Array(numelOf(view.shape));
  if (out.length === 0) return out;
  const data = dataOf(view);
  const w = new RowWalker(view.shape, [view.strides], [view.offset]);
  const n = w.n;
  for (let r = 0, o = 0; r < w.rows; r++, o += n) {
    decodeRow(data, view.storage.dtype, w.offsets[0], w.inner[0], n, out, o);
    w.next();
  }
  return out;
}

/** Writes row-major values into a (possibly strided) view, encoding for its dtype. */
export function storeView(values: FloatArray, view: View): void {
  if (values.length === 0) return;
  const data = dataOf(view);
  const w = new RowWalker(view.shape, [view.strides], [view.offset]);
  const n = w.n;
  for (let r = 0, o = 0; r < w.rows; r++, o += n) {
    encodeRow(values, o, n, data, view.storage.dtype, w.offsets[0], w.inner[0]);
    w.next();
  }
}

/** Contiguous copy of a view in storage format (16-bit floats stay raw bits). */
export function gatherRaw(view: View): HostArray {
  const dtype = view.storage.dtype;
  const out = allocHost(dtype, numelOf(view.shape));
  if (out.length === 0) return out;
  const data = dataOf(view);
  const w = new RowWalker(view.shape, [view.strides], [view.offset]);
  const n = w.n;
  const stride = w.inner[0];
  for (let r = 0, o = 0; r < w.rows; r++, o += n) {
    let s = w.offsets[0];
    if (stride === 1) out.set(data.subarray(s, s + n), o);
    else for (let i = 0; i < n; i++, s += stride) out[o + i] = data[s];
    w.next();
  }
  return out;
}
