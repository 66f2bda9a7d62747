/**
 * Data types. bfloat16 and float16 are stored as their raw 16-bit patterns (Uint16Array) on the
 * host because JavaScript has no native 16-bit float arrays on Node 20; arithmetic on them widens
 * to float32 and rounds back to nearest-even on store, which is what the GPU does too.
 */

export type DType = "float32" | "float64" | "bfloat16" | "float16" | "int32";

export const DTYPES: readonly DType[] = ["float32", "float64", "bfloat16", "float16", "int32"];

export type HostArray = Float32Array | Float64Array | Uint16Array | Int32Array;

const ITEMSIZE: Record<DType, number> = { float32: 4, float64: 8, bfloat16: 2, float16: 2, int32: 4 };

export function itemsize(dtype: DType): number {
  return ITEMSIZE[dtype];
}

export function isFloating(dtype: DType): boolean {
  return dtype !== "int32";
}

export function assertDType(value: unknown, field = "dtype"): DType {
  if (typeof value === "string" && (DTYPES as readonly string[]).includes(value)) return value as DType;
  throw new TypeError(`${field}: got ${JSON.stringify(value)}; expected one of ${DTYPES.join(", ")}`);
}

/** Allocates a zeroed host array able to hold `n` elements of `dtype` in its storage format. */
/**
 * A zeroed host array. `shared`: over a SharedArrayBuffer, which worker threads can update in
 * place (the CPU optimizer's threads; see cpu/optimizerThreads.ts).
 */
export function allocHost(dtype: DType, n: number, shared: boolean | SharedArrayBuffer = false): HostArray {
  // A given buffer (reused shared memory) is taken whole: it must hold exactly n elements.
  const buffer = shared instanceof SharedArrayBuffer ? shared : shared ? new SharedArrayBuffer(n * itemsize(dtype)) : null;
  switch (dtype) {
    case "float32":
      return buffer ? new Float32Array(buffer) : new Float32Array(n);
    case "float64":
      return buffer ? new Float64Array(buffer) : new Float64Array(n);
    case "int32":
      return buffer ? new Int32Array(buffer) : new Int32Array(n);
    case "bfloat16":
    case "float16":
      return buffer ? new Uint16Array(buffer) : new Uint16Array(n);
  }
}

// One shared scratch word for bit casts: cheaper than a DataView per element.
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 -> bfloat16 bits, round to nearest even; NaN stays a quiet NaN. */
export function f32ToBf16Bits(x: number): number {
  f32[0] = x;
  const bits = u32[0];
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x007fffff) !== 0) return ((bits >>> 16) | 0x0040) & 0xffff;
  const rounding = 0x7fff + ((bits >>> 16) & 1);
  return ((bits + rounding) >>> 16) & 0xffff;
}

export function bf16BitsToF32(b: number): number {
  u32[0] = b << 16;
  return f32[0];
}

/** float32/float64 -> IEEE half bits, round to nearest even, overflow to infinity, subnormals kept. */
export function f32ToF16Bits(x: number): number {
  f32[0] = x;
  const bits = u32[0];
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >>> shift;
    const rem = mant & ((1 << shift) - 1);
    if (rem > half || (rem === half && (r & 1))) r++;
    return sign | r;
  }
  let r = mant >>> 13;
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1))) {
    r++;
    if (r === 0x400) {
      r = 0;
      e++;
      if (e >= 0x1f) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | r;
}

export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Whether `data` is the typed array that stores `dtype` (16-bit floats as raw bits in a Uint16Array). */
export function isStorageArray(data: HostArray, dtype: DType): boolean {
  switch (dtype) {
    case "float32":
      return data instanceof Float32Array;
    case "float64":
      return data instanceof Float64Array;
    case "int32":
      return data instanceof Int32Array;
    default:
      return data instanceof Uint16Array;
  }
}

/** Reads element i of a host array as a JavaScript number, decoding 16-bit floats. */
export function readElement(dtype: DType, a: HostArray, i: number): number {
  if (dtype === "bfloat16") return bf16BitsToF32(a[i]);
  if (dtype === "float16") return f16BitsToF32(a[i]);
  return a[i];
}

/** Encodes a JavaScript number for storage as `dtype` (rounding as the dtype requires). */
export function encodeElement(dtype: DType, x: number): number {
  if (dtype === "bfloat16") return f32ToBf16Bits(x);
  if (dtype === "float16") return f32ToF16Bits(x);
  if (dtype === "int32") return Math.trunc(x) | 0;
  if (dtype === "float32") return Math.fround(x);
  return x;
}

/** Decodes a whole host array to float64 values (a copy). */
export function decodeAll(dtype: DType, a: HostArray): Float64Array {
  const out = new Float64Array(a.length);
  if (dtype === "bfloat16") for (let i = 0; i < a.length; i++) out[i] = bf16BitsToF32(a[i]);
  else if (dtype === "float16") for (let i = 0; i < a.length; i++) out[i] = f16BitsToF32(a[i]);
  else out.set(a as ArrayLike<number>);
  return out;
}

/** The dtype arithmetic between two operands produces (PyTorch's promotion on the dtypes we have). */
export function promote(a: DType, b: DType): DType {
  if (a === b) return a;
  const rank: Record<DType, number> = { int32: 0, bfloat16: 1, float16: 1, float32: 3, float64: 4 };
  if ((a === "bfloat16" && b === "float16") || (a === "float16" && b === "bfloat16")) return "float32";
  return rank[a] >= rank[b] ? a : b;
}
