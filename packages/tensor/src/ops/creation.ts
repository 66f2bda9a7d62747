/** Tensor factories: from data, constants, ranges and seeded random draws. */
import { type DType, type HostArray, allocHost, assertDType, encodeElement } from "../dtype";
import { contiguousStrides, formatShape, numel } from "../shape";
import { defaultDeviceName, getBackend } from "../device";
import { StorageRef } from "../memory";
import { defaultGenerator, Generator } from "../random";
import { Tensor } from "../tensor";
import { emptyTensor } from "./util";
import { contiguousCopy } from "./elementwise";

export interface TensorOptions {
  dtype?: DType;
  device?: string;
  requiresGrad?: boolean;
}

export interface RandomOptions extends TensorOptions {
  generator?: Generator;
  /** Shorthand for a fresh `new Generator(seed)`. */
  seed?: number;
}

type Nested = number | boolean | Nested[];

function finish(t: Tensor, opts: TensorOptions): Tensor {
  if (opts.requiresGrad) t.requiresGrad_(true);
  return t;
}

function dtypeOf(opts: TensorOptions, fallback: DType = "float32"): DType {
  return opts.dtype === undefined ? fallback : assertDType(opts.dtype, "dtype");
}

function checkShape(shape: readonly number[], op: string): number[] {
  if (!Array.isArray(shape)) throw new TypeError(`${op}: shape must be an array of sizes, got ${JSON.stringify(shape)}`);
  for (const s of shape) {
    if (!Number.isInteger(s) || s < 0) throw new RangeError(`${op}: invalid size ${s} in shape ${formatShape(shape)}`);
  }
  return [...shape];
}

/** Wraps host data (16-bit floats as raw bits) in a tensor; the array is copied to the device. */
export function fromHost(data: HostArray, shape: readonly number[], dtype: DType, opts: TensorOptions = {}): Tensor {
  const s = checkShape(shape, "fromHost");
  if (numel(s) !== data.length) {
    throw new RangeError(`fromHost: ${data.length} elements do not fill shape ${formatShape(s)} (${numel(s)} elements)`);
  }
  const backend = getBackend(opts.device ?? defaultDeviceName());
  const t = new Tensor(new StorageRef(backend.fromHost(data, dtype), backend), s, contiguousStrides(s), 0);
  return finish(t, opts);
}

function inferNestedShape(data: Nested): number[] {
  const shape: number[] = [];
  let cur: Nested = data;
  while (Array.isArray(cur)) {
    shape.push(cur.length);
    cur = cur[0];
  }
  return shape;
}

function flattenNested(data: Nested, shape: readonly number[], out: number[], depth = 0): void {
  if (depth === shape.length) {
    if (typeof data !== "number" && typeof data !== "boolean") {
      throw new TypeError(`tensor: ragged or non-numeric data at depth ${depth}`);
    }
    out.push(Number(data));
    return;
  }
  if (!Array.isArray(data) || data.length !== shape[depth]) {
    throw new TypeError(`tensor: ragged nested array: expected ${shape[depth]} elements at depth ${depth}`);
  }
  for (const d of data) flattenNested(d, shape, out, depth + 1);
}

/** A tensor from nested arrays, a flat array with `shape`, a typed array, or a number (0-d). */
export function tensor(
  data: Nested | ArrayLike<number>,
  opts: TensorOptions & { shape?: readonly number[] } = {},
): Tensor {
  let flat: ArrayLike<number>;
  let shape: number[];
  if (ArrayBuffer.isView(data)) {
    flat = data as unknown as ArrayLike<number>;
    shape = opts.shape ? checkShape(opts.shape, "tensor") : [flat.length];
  } else if (typeof data === "number" || typeof data === "boolean") {
    flat = [Number(data)];
    shape = opts.shape ? checkShape(opts.shape, "tensor") : [];
  } else {
    const inferred = inferNestedShape(data as Nested);
    const values: number[] = [];
    flattenNested(data as Nested, inferred, values);
    flat = values;
    shape = opts.shape ? checkShape(opts.shape, "tensor") : inferred;
  }
  if (numel(shape) !== flat.length) {
    throw new RangeError(`tensor: ${flat.length} values do not fill shape ${formatShape(shape)}`);
  }
  const dtype = dtypeOf(opts, data instanceof Int32Array ? "int32" : "float32");
  const host = allocHost(dtype, flat.length);
  for (let i = 0; i < flat.length; i++) host[i] = encodeElement(dtype, flat[i]);
  return fromHost(host, shape, dtype, opts);
}

export function full(shape: readonly number[], value: number, opts: TensorOptions = {}): Tensor {
  const t = emptyTensor(checkShape(shape, "full"), dtypeOf(opts), opts.device ?? defaultDeviceName());
  // Host memory comes zeroed: filling it with zeros again is a pass over it for nothing (seconds a
  // step for offloaded slices of a billion parameters).
  if (value !== 0 || !t.backend.allocatesZeroed) t.backend.fill(t, value);
  return finish(t, opts);
}

export const zeros = (shape: readonly number[], opts: TensorOptions = {}): Tensor => full(shape, 0, opts);
export const ones = (shape: readonly number[], opts: TensorOptions = {}): Tensor => full(shape, 1, opts);

/** Uninitialised memory on GPUs (zeroes on the CPU backend). */
export function empty(shape: readonly number[], opts: TensorOptions = {}): Tensor {
  return finish(emptyTensor(checkShape(shape, "empty"), dtypeOf(opts), opts.device ?? defaultDeviceName()), opts);
}

export function zerosLike(t: Tensor, opts: TensorOptions = {}): Tensor {
  return zeros(t.shape, { dtype: t.dtype, device: t.device, ...opts });
}

export function onesLike(t: Tensor, opts: TensorOptions = {}): Tensor {
  return ones(t.shape, { dtype: t.dtype, device: t.device, ...opts });
}

/** start, start+step, ... below end. int32 unless a float dtype is asked for. */
export function arange(start: number, end?: number, step = 1, opts: TensorOptions = {}): Tensor {
  const [s, e] = end === undefined ? [0, start] : [start, end];
  if (step === 0 || !Number.isFinite(step)) throw new RangeError(`arange: step must be a non-zero number, got ${step}`);
  const n = Math.max(0, Math.ceil((e - s) / step));
  const dtype = dtypeOf(opts, "int32");
  const host = allocHost(dtype, n);
  for (let i = 0; i < n; i++) host[i] = encodeElement(dtype, s + i * step);
  return fromHost(host, [n], dtype, opts);
}

function generatorOf(opts: RandomOptions): Generator {
  if (opts.generator) return opts.generator;
  if (opts.seed !== undefined) return new Generator(opts.seed);
  return defaultGenerator();
}

function randomTensor(kind: "uniform" | "normal", shape: readonly number[], opts: RandomOptions): Tensor {
  const dtype = dtypeOf(opts);
  const device = opts.device ?? defaultDeviceName();
  const s = checkShape(shape, kind === "uniform" ? "rand" : "randn");
  // Draws happen in float32 so every dtype sees the same underlying numbers.
  const f = emptyTensor(s, "float32", device);
  f.backend.random(kind, f, generatorOf(opts).take(f.numel));
  const t = dtype === "float32" ? f : contiguousCopy(f, dtype);
  if (t !== f) f.dispose();
  return finish(t, opts);
}

export const rand = (shape: readonly number[], opts: RandomOptions = {}): Tensor => randomTensor("uniform", shape, opts);
export const randn = (shape: readonly number[], opts: RandomOptions = {}): Tensor => randomTensor("normal", shape, opts);

/** Integers uniformly in [low, high). */
export function randint(low: number, high: number, shape: readonly number[], opts: RandomOptions = {}): Tensor {
  if (!Number.isInteger(low) || !Number.isInteger(high) || high <= low) {
    throw new RangeError(`randint: need integers low < high, got low=${low} high=${high}`);
  }
  const u = randomTensor("uniform", shape, { ...opts, dtype: "float64" });
  const host = u.toHost() as Float64Array;
  u.dispose();
  const out = new Int32Array(host.length);
  const span = high - low;
  for (let i = 0; i < host.length; i++) out[i] = Math.min(low + Math.floor(host[i] * span), high - 1);
  return fromHost(out, shape, "int32", { device: opts.device });
}
