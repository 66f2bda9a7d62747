/**
 * Shared by the GPU tests: whether a GPU is there (tests skip with "skipped: no GPU found" when not),
 * and a way to run one Backend op on the CPU reference backend and on the CUDA backend from the same
 * fresh random inputs and compare every output with a written-down tolerance: norm-wise relative
 * error 1e-5 for float32, 1e-2 for bfloat16 (both backends round outputs to the dtype, so the gap
 * is a few ulps of it).
 */
import type { Backend, DType, View } from "@fulgur/tensor";
import { cpuBackend, decodeAll } from "@fulgur/tensor";
import { relativeError } from "@fulgur/tensor/testing";
import { expect } from "vitest";
import { CudaAccelerator, cudaBackend } from "../../src/index";

const acc = new CudaAccelerator();
export const gpuCount = acc.deviceCount();
export const hasGpu = gpuCount > 0;
export const NO_GPU = "skipped: no GPU found";

export const TOLERANCE: Partial<Record<DType, number>> = { float32: 1e-5, bfloat16: 1e-2, float64: 1e-12, int32: 0 };

export const cpu = (): Backend => cpuBackend();
export const gpu = () => cudaBackend("cuda:0");

/** Deterministic pseudo-random numbers (mulberry32 + Box-Muller), fresh per seed. */
export function randomData(n: number, seed: number, kind: "normal" | "positive" | { low: number; high: number } = "normal"): Float64Array {
  let s = seed >>> 0;
  const u = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    if (typeof kind === "object") out[i] = kind.low + Math.floor(u() * (kind.high - kind.low));
    else {
      const z = Math.sqrt(-2 * Math.log(u() + 1e-12)) * Math.cos(2 * Math.PI * u());
      out[i] = kind === "positive" ? Math.abs(z) + 0.2 : z;
    }
  }
  return out;
}

/** The same logical tensor on both backends. */
export interface Pair {
  readonly c: View;
  readonly g: View;
}

function contiguous(shape: readonly number[]): number[] {
  const st = new Array<number>(shape.length);
  for (let i = shape.length - 1, s = 1; i >= 0; i--) {
    st[i] = s;
    s *= shape[i];
  }
  return st;
}

function hostArrayFor(values: Float64Array, dtype: DType) {
  return dtype === "int32" ? Int32Array.from(values) : dtype === "float64" ? values : Float32Array.from(values);
}

/** A tensor of `shape` filled from `values` on both backends (cast to dtype by each backend's fromHost). */
export function pair(shape: readonly number[], dtype: DType, values: Float64Array): Pair {
  const host = hostArrayFor(values, dtype);
  const mk = (b: Backend): View => ({ storage: b.fromHost(host, dtype), shape: [...shape], strides: contiguous(shape), offset: 0 });
  return { c: mk(cpu()), g: mk(gpu()) };
}

export function randPair(shape: readonly number[], dtype: DType, seed: number, kind?: Parameters<typeof randomData>[2]): Pair {
  return pair(shape, dtype, randomData(shape.reduce((a, b) => a * b, 1), seed, kind));
}

/** Outputs start from the same random contents, so ops that accumulate (+=) are checked too. */
export function outPair(shape: readonly number[], dtype: DType, seed = 99): Pair {
  return randPair(shape, dtype, seed);
}

/** A view transform applied to both sides (transpose, slice, expand). */
export function mapPair(p: Pair, f: (v: View) => View): Pair {
  return { c: f(p.c), g: f(p.g) };
}

export function values(v: View, b: Backend): Float64Array {
  return decodeAll(v.storage.dtype, b.read(v));
}

/** Asserts the GPU result matches the CPU result within the dtype's tolerance (or `tol`). */
export function expectClose(p: Pair, label: string, tol?: number): void {
  const ref = values(p.c, cpu());
  const got = values(p.g, gpu());
  const t = tol ?? TOLERANCE[p.c.storage.dtype] ?? 1e-5;
  const err = relativeError(got, ref);
  expect(err, `${label}: relative error ${err.toExponential(2)} > ${t}`).toBeLessThanOrEqual(t);
}

export function transpose2(v: View): View {
  const n = v.shape.length;
  const shape = [...v.shape];
  const strides = [...v.strides];
  [shape[n - 1], shape[n - 2]] = [shape[n - 2], shape[n - 1]];
  [strides[n - 1], strides[n - 2]] = [strides[n - 2], strides[n - 1]];
  return { ...v, shape, strides };
}
