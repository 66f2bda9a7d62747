/**
 * Between Fulgur tensors and safetensors bytes. Fulgur's dtypes map one to one onto F32, F64,
 * BF16, F16 and I32 (16-bit floats travel as their raw bits both ways, so bf16 bit patterns,
 * NaN payloads included, survive a round trip). Files from other tools may hold integer dtypes
 * Fulgur has no tensor for; those load as int32 when every value fits, so a PyTorch I64 index
 * buffer or a U8 mask is usable, and fail naming the first value that does not.
 */
import { fromHost, type DType, type HostArray, type Tensor } from "@fulgur/tensor";
import { CheckpointFormatError } from "./errors";
import { hasOwn, safetensorsItemsize, setOwn, type RawTensor, type SafetensorsDType } from "./safetensors/format";
import type { LazyTensor } from "./safetensors/writer";

const TO_SAFETENSORS: Record<DType, SafetensorsDType> = {
  float32: "F32",
  float64: "F64",
  bfloat16: "BF16",
  float16: "F16",
  int32: "I32",
};

const FROM_SAFETENSORS: Partial<Record<SafetensorsDType, DType>> = {
  F32: "float32",
  F64: "float64",
  BF16: "bfloat16",
  F16: "float16",
  I32: "int32",
};

/** Integer dtypes that load as int32 when their values fit. */
const WIDENED = new Set<SafetensorsDType>(["BOOL", "U8", "I8", "I16", "U16", "U32", "I64", "U64"]);

const HOST_IS_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

export function safetensorsDTypeOf(dtype: DType): SafetensorsDType {
  const st = hasOwn(TO_SAFETENSORS, dtype) ? TO_SAFETENSORS[dtype] : undefined;
  if (!st) {
    throw new TypeError(`dtype ${JSON.stringify(dtype)} has no safetensors equivalent; expected one of ${Object.keys(TO_SAFETENSORS).join(", ")}`);
  }
  return st;
}

/** The Fulgur dtype a safetensors dtype loads as, or undefined when it cannot be loaded. */
export function fulgurDTypeOf(dtype: SafetensorsDType): DType | undefined {
  return (hasOwn(FROM_SAFETENSORS, dtype) ? FROM_SAFETENSORS[dtype] : undefined) ?? (WIDENED.has(dtype) ? "int32" : undefined);
}

function swapBytes(bytes: Uint8Array, width: number): void {
  for (let i = 0; i < bytes.length; i += width) bytes.subarray(i, i + width).reverse();
}

/** The little-endian bytes of a host array (a view on little-endian hosts, a swapped copy otherwise). */
export function hostToBytes(host: HostArray): Uint8Array {
  const view = new Uint8Array(host.buffer, host.byteOffset, host.byteLength);
  if (HOST_IS_LITTLE_ENDIAN) return view;
  const copy = view.slice();
  swapBytes(copy, host.BYTES_PER_ELEMENT);
  return copy;
}

type HostCtor = { new (b: ArrayBufferLike, o: number, n: number): HostArray; BYTES_PER_ELEMENT: number };

/** A typed array over little-endian bytes: a view when aligned and native, otherwise a copy. */
function bytesToHost(data: Uint8Array, ctor: HostCtor): HostArray {
  const width = ctor.BYTES_PER_ELEMENT;
  const n = data.length / width;
  if (HOST_IS_LITTLE_ENDIAN && data.byteOffset % width === 0) return new ctor(data.buffer, data.byteOffset, n);
  const copy = data.slice();
  if (!HOST_IS_LITTLE_ENDIAN) swapBytes(copy, width);
  return new ctor(copy.buffer, 0, n);
}

function widenToInt32(raw: RawTensor, name: string, path: string): Int32Array {
  const n = raw.data.length / safetensorsItemsize(raw.dtype);
  const dv = new DataView(raw.data.buffer, raw.data.byteOffset, raw.data.byteLength);
  const out = new Int32Array(n);
  const tooBig = (i: number, v: number | bigint): never => {
    throw new CheckpointFormatError(
      path,
      "conversion",
      `tensor ${JSON.stringify(name)}: ${raw.dtype} loads as int32, but element ${i} is ${v}, outside [-2147483648, 2147483647]`,
    );
  };
  for (let i = 0; i < n; i++) {
    switch (raw.dtype) {
      case "BOOL":
      case "U8":
        out[i] = dv.getUint8(i);
        break;
      case "I8":
        out[i] = dv.getInt8(i);
        break;
      case "I16":
        out[i] = dv.getInt16(2 * i, true);
        break;
      case "U16":
        out[i] = dv.getUint16(2 * i, true);
        break;
      case "U32": {
        const v = dv.getUint32(4 * i, true);
        if (v > 0x7fffffff) tooBig(i, v);
        out[i] = v;
        break;
      }
      case "I64":
      case "U64": {
        const v = raw.dtype === "I64" ? dv.getBigInt64(8 * i, true) : dv.getBigUint64(8 * i, true);
        if (v > 2147483647n || v < -2147483648n) tooBig(i, v);
        out[i] = Number(v);
        break;
      }
    }
  }
  return out;
}

/** The host array and Fulgur dtype for a byte-level tensor. `path` names the file in errors. */
export function rawToHost(raw: RawTensor, name: string, path: string): { dtype: DType; data: HostArray } {
  switch (raw.dtype) {
    case "F32":
      return { dtype: "float32", data: bytesToHost(raw.data, Float32Array) };
    case "F64":
      return { dtype: "float64", data: bytesToHost(raw.data, Float64Array) };
    case "BF16":
      return { dtype: "bfloat16", data: bytesToHost(raw.data, Uint16Array) };
    case "F16":
      return { dtype: "float16", data: bytesToHost(raw.data, Uint16Array) };
    case "I32":
      return { dtype: "int32", data: bytesToHost(raw.data, Int32Array) };
  }
  if (WIDENED.has(raw.dtype)) return { dtype: "int32", data: widenToInt32(raw, name, path) };
  throw new CheckpointFormatError(
    path,
    "conversion",
    `tensor ${JSON.stringify(name)}: dtype ${raw.dtype} has no Fulgur tensor dtype; loadable: F32, F64, BF16, F16, I32 and integer dtypes whose values fit in int32`,
  );
}

/** The byte-level record of a tensor (a contiguous host copy, whatever the tensor's strides). */
export function tensorToRaw(t: Tensor): RawTensor {
  return { dtype: safetensorsDTypeOf(t.dtype), shape: [...t.shape], data: hostToBytes(t.toHost()) };
}

/** Checks that `value` looks like a Tensor (by shape, as plugins are checked) before anything is written. */
export function assertTensorLike(value: unknown, field: string): asserts value is Tensor {
  const v = value as Partial<Tensor> | null;
  if (v === null || typeof v !== "object" || typeof v.toHost !== "function" || !Array.isArray(v.shape)) {
    throw new TypeError(`${field} must be a Tensor (with shape, dtype and toHost()), got ${value === null ? "null" : typeof value}`);
  }
  // Before dtype: a disposed tensor's dtype getter throws a message that does not name the field.
  if (v.isDisposed) throw new TypeError(`${field} is a disposed Tensor; its storage is gone`);
  if (typeof v.dtype !== "string") throw new TypeError(`${field} must be a Tensor, has no dtype`);
  safetensorsDTypeOf(v.dtype as DType);
}

/**
 * A tensor the writer copies to the host only when it reaches it, so saving a model from a GPU
 * holds one tensor on the host at a time.
 */
export function lazyTensor(name: string, t: Tensor): LazyTensor {
  return { name, dtype: safetensorsDTypeOf(t.dtype), shape: [...t.shape], bytes: () => hostToBytes(t.toHost()) };
}

/** Copies tensors to byte-level records, for `writeSafetensors` or `encodeSafetensors`. */
export function tensorsToSafetensors(tensors: Readonly<Record<string, Tensor>>): Record<string, RawTensor> {
  const out: Record<string, RawTensor> = {};
  for (const [name, t] of Object.entries(tensors)) {
    assertTensorLike(t, `tensors[${JSON.stringify(name)}]`);
    setOwn(out, name, tensorToRaw(t));
  }
  return out;
}

export interface LoadTensorsOptions {
  /** Where the tensors go; "cpu" when absent. */
  readonly device?: string;
  /** Names the source in errors. */
  readonly path?: string;
}

/** Makes a tensor on `device` from a byte-level record (one copy, straight to the device). */
export function rawToTensor(raw: RawTensor, name: string, options: LoadTensorsOptions = {}): Tensor {
  const { dtype, data } = rawToHost(raw, name, options.path ?? "<tensors>");
  return fromHost(data, [...raw.shape], dtype, { device: options.device ?? "cpu" });
}

/**
 * Makes Fulgur tensors from byte-level records. If one fails, those already made are disposed
 * before the error propagates, so a failed load leaks no device memory.
 */
export function loadTensors(raw: Readonly<Record<string, RawTensor>>, options: LoadTensorsOptions = {}): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  try {
    for (const [name, r] of Object.entries(raw)) setOwn(out, name, rawToTensor(r, name, options));
    return out;
  } catch (e) {
    for (const t of Object.values(out)) t.dispose();
    throw e;
  }
}
