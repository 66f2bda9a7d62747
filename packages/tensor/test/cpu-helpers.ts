/**
 * Shared scaffolding for the CPU backend tests: a seeded PRNG, views built with arbitrary strides
 * over storages pre-filled with NaN (so a kernel reading outside its view shows up), and
 * float64 reference helpers. Tests compare kernels against naive float64 loops written here.
 */
import { expect } from "vitest";
import type { View } from "../src/backend";
import type { DType } from "../src/dtype";
import { allocHost, decodeAll, encodeElement, readElement } from "../src/dtype";
import { CpuBackend } from "../src/cpu";

export const be = new CpuBackend();

/** mulberry32: a tiny seeded PRNG so every run sees the same "random" inputs. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function contiguousStrides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  for (let i = shape.length - 1, acc = 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

/** n values uniform in [lo, hi). */
export function randArray(r: () => number, n: number, lo = -2, hi = 2): Float64Array {
  const a = new Float64Array(n);
  for (let i = 0; i < n; i++) a[i] = lo + (hi - lo) * r();
  return a;
}

/** Row-major multi-index of flat index i. */
export function unravel(i: number, shape: readonly number[]): number[] {
  const idx = new Array<number>(shape.length);
  for (let d = shape.length - 1; d >= 0; d--) {
    idx[d] = i % shape[d];
    i = Math.floor(i / shape[d]);
  }
  return idx;
}

/**
 * A view of `dtype` holding `values` (row-major over shape) at the given strides/offset; every
 * storage element the view does not cover holds NaN (or a sentinel for int32).
 */
export function makeView(
  values: ArrayLike<number>,
  shape: readonly number[],
  dtype: DType = "float32",
  strides: readonly number[] = contiguousStrides(shape),
  offset = 0,
): View {
  let maxIdx = offset;
  for (let d = 0; d < shape.length; d++) if (shape[d] > 0) maxIdx += (shape[d] - 1) * Math.max(strides[d], 0);
  const storage = be.alloc(dtype, maxIdx + 1);
  const fillVal = encodeElement(dtype, dtype === "int32" ? -999999 : NaN);
  storage.data.fill(fillVal);
  const n = numel(shape);
  for (let i = 0; i < n; i++) {
    const idx = unravel(i, shape);
    let o = offset;
    for (let d = 0; d < shape.length; d++) o += idx[d] * strides[d];
    storage.data[o] = encodeElement(dtype, values[i]);
  }
  return { storage, shape, strides, offset };
}

/** Same logical content, laid out with the dims reversed in memory (a transpose view). */
export function transposedView(values: ArrayLike<number>, shape: readonly number[], dtype: DType = "float32"): View {
  const rev = [...shape].reverse();
  const rs = contiguousStrides(rev);
  return makeView(values, shape, dtype, shape.map((_, d) => rs[shape.length - 1 - d]));
}

/** Same logical content at an offset, with every dim's stride padded (gaps between rows). */
export function paddedView(values: ArrayLike<number>, shape: readonly number[], dtype: DType = "float32"): View {
  const strides = new Array<number>(shape.length);
  for (let d = shape.length - 1, acc = 2; d >= 0; d--) {
    strides[d] = acc;
    acc = acc * shape[d] + 3;
  }
  return makeView(values, shape, dtype, strides, 5);
}

export function empty(shape: readonly number[], dtype: DType = "float32"): View {
  return { storage: be.alloc(dtype, numel(shape)), shape, strides: contiguousStrides(shape), offset: 0 };
}

/** A view's values as float64, row-major. */
export function values(view: View): Float64Array {
  return decodeAll(view.storage.dtype, be.read(view));
}

/** Expands row-major values of `shape` to `target` by numpy broadcasting. */
export function broadcastValues(v: ArrayLike<number>, shape: readonly number[], target: readonly number[]): Float64Array {
  const out = new Float64Array(numel(target));
  const off = target.length - shape.length;
  const st = contiguousStrides(shape);
  for (let i = 0; i < out.length; i++) {
    const idx = unravel(i, target);
    let o = 0;
    for (let d = 0; d < shape.length; d++) o += (shape[d] === 1 ? 0 : idx[d + off]) * st[d];
    out[i] = v[o];
  }
  return out;
}

/** Expanded view of `v` (shape `shape`) read as `target`: stride 0 on broadcast dims. */
export function expandView(v: View, target: readonly number[]): View {
  const off = target.length - v.shape.length;
  const strides = target.map((_, d) => {
    const sd = d - off;
    return sd < 0 || v.shape[sd] === 1 ? 0 : v.strides[sd];
  });
  return { storage: v.storage, shape: target, strides, offset: v.offset };
}

export function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol = 1e-6, atol = 1e-6): void {
  expect(actual.length).toBe(expected.length);
  let worst = -1;
  let worstErr = 0;
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const e = expected[i];
    if (Number.isNaN(e) && Number.isNaN(a)) continue;
    if (a === e) continue;
    const err = Math.abs(a - e) - (atol + rtol * Math.abs(e));
    if (!(err <= 0) && (worst < 0 || !(err <= worstErr))) {
      worst = i;
      worstErr = err;
    }
  }
  if (worst >= 0) {
    expect.fail(`element ${worst}: got ${actual[worst]}, expected ${expected[worst]} (rtol ${rtol}, atol ${atol})`);
  }
}

/** Central finite difference of scalar f at x (mutating x temporarily), float64. */
export function numericGrad(x: Float64Array, f: () => number, h = 1e-5): Float64Array {
  const g = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const old = x[i];
    x[i] = old + h;
    const fp = f();
    x[i] = old - h;
    const fm = f();
    x[i] = old;
    g[i] = (fp - fm) / (2 * h);
  }
  return g;
}

export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

/** x stored as `dtype` and read back: the value a kernel writing x into that dtype must produce. */
export function roundTo(dtype: DType, x: number): number {
  return readElement(dtype, allocHostWith(dtype, encodeElement(dtype, x)), 0);
}

function allocHostWith(dtype: DType, bits: number) {
  const a = allocHost(dtype, 1);
  a[0] = bits;
  return a;
}
