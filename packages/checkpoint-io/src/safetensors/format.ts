/**
 * The safetensors layout, shared by the reader and the writer: dtype names and sizes, the header
 * as JSON, and the strict checks a header must pass before a single tensor byte is trusted.
 *
 * A file is: 8 bytes little-endian u64 N, N bytes of UTF-8 JSON (space-padded so the data starts
 * on an 8-byte boundary), then the data buffer. The JSON maps each tensor name to
 * `{ dtype, shape, data_offsets: [begin, end] }` (offsets relative to the data buffer) and may
 * hold `__metadata__`, a map of strings. The tensors must tile the buffer exactly: no gaps, no
 * overlaps, nothing after the last one. The rules follow the reference Rust implementation
 * (huggingface/safetensors `Metadata::validate`), so a file this module accepts, Python accepts.
 */
import { CheckpointFormatError } from "../errors";

/**
 * The byte-sized dtypes of the safetensors spec, in the reference implementation's declaration
 * order (which fixes the layout order, see `layoutOrder`). Sub-byte ones (F4, F6_*) are not supported.
 */
export type SafetensorsDType =
  | "BOOL"
  | "U8"
  | "I8"
  | "F8_E5M2"
  | "F8_E4M3"
  | "F8_E8M0"
  | "I16"
  | "U16"
  | "F16"
  | "BF16"
  | "I32"
  | "U32"
  | "F32"
  | "C64"
  | "F64"
  | "I64"
  | "U64";

// Key order is the reference implementation's dtype order; SAFETENSORS_DTYPES and layoutOrder rely on it.
const ITEMSIZE: Record<SafetensorsDType, number> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  F8_E8M0: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  C64: 8,
  F64: 8,
  I64: 8,
  U64: 8,
};

export const SAFETENSORS_DTYPES: readonly SafetensorsDType[] = Object.keys(ITEMSIZE) as SafetensorsDType[];

export function isSafetensorsDType(value: unknown): value is SafetensorsDType {
  return typeof value === "string" && Object.prototype.hasOwnProperty.call(ITEMSIZE, value);
}

export function safetensorsItemsize(dtype: SafetensorsDType): number {
  return ITEMSIZE[dtype];
}

/** One tensor at the bytes level: little-endian element data in row-major order. */
export interface RawTensor {
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  readonly data: Uint8Array;
}

/** One header entry, as validated. Offsets are relative to the start of the data buffer. */
export interface TensorHeaderEntry {
  readonly name: string;
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
  readonly dataOffsets: readonly [number, number];
  readonly byteLength: number;
}

/** A parsed header: what `fulgur checkpoint inspect` shows without reading any tensor data. */
export interface SafetensorsHeader {
  readonly metadata: Readonly<Record<string, string>>;
  /** In data order (ascending offsets), which is also the order the writer laid them out in. */
  readonly tensors: readonly TensorHeaderEntry[];
  /** N, the JSON header's length in bytes including padding. */
  readonly headerLength: number;
  /** Where the data buffer starts in the file: 8 + N. */
  readonly dataStart: number;
  /** The data buffer's length the header requires: the end of the last tensor. */
  readonly dataLength: number;
}

/** The reference implementation refuses headers above 100 MB; a larger one is corruption, not a model. */
export const MAX_HEADER_LENGTH = 100_000_000;

export const METADATA_KEY = "__metadata__";

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Sets an own property even for names like "__proto__", which plain assignment would not. */
export function setOwn<T>(record: Record<string, T>, key: string, value: T): void {
  Object.defineProperty(record, key, { value, enumerable: true, writable: true, configurable: true });
}

export function hasOwn(record: object, key: string): boolean {
  return Object.prototype.hasOwnProperty.call(record, key);
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isSize(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/**
 * Reads N from the first 8 bytes. Returned as a number when it can be one; callers compare it
 * against the file size, so a value beyond 2^53 is reported as too large rather than rounded.
 */
export function decodeHeaderLength(prefix: Uint8Array, path: string): number {
  const view = new DataView(prefix.buffer, prefix.byteOffset, 8);
  const n = view.getBigUint64(0, true);
  if (n > BigInt(MAX_HEADER_LENGTH)) {
    throw new CheckpointFormatError(
      path,
      "header_length",
      `header length ${n} exceeds the ${MAX_HEADER_LENGTH}-byte limit of the safetensors format (corrupt length prefix?)`,
    );
  }
  return Number(n);
}

/**
 * Validates the JSON header bytes (the N bytes after the length prefix) and returns the tensors in
 * data order. Checks everything that can be checked without the data: dtypes, shapes, byte sizes
 * against shapes, and that the offsets tile [0, dataLength) exactly.
 */
export function parseHeader(headerBytes: Uint8Array, path: string): SafetensorsHeader {
  const fail = (problem: "header" | "dtype" | "shape" | "offsets" | "metadata", detail: string): never => {
    throw new CheckpointFormatError(path, problem, detail);
  };
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(headerBytes);
  } catch {
    return fail("header", "header is not valid UTF-8");
  }
  if (!text.startsWith("{")) {
    fail("header", `header must be a JSON object starting with "{", starts with ${JSON.stringify(text.slice(0, 16))}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return fail("header", `header is not valid JSON: ${(e as Error).message}`);
  }
  if (!isPlainObject(json)) return fail("header", "header must be a JSON object");

  const metadata: Record<string, string> = {};
  const tensors: TensorHeaderEntry[] = [];
  for (const [name, value] of Object.entries(json)) {
    if (name === METADATA_KEY) {
      if (value === null) continue;
      if (!isPlainObject(value)) fail("metadata", `${METADATA_KEY} must be an object of strings, is ${JSON.stringify(value)}`);
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
        if (typeof v !== "string") {
          fail("metadata", `${METADATA_KEY}[${JSON.stringify(k)}] must be a string, is ${JSON.stringify(v)}`);
        }
        setOwn(metadata, k, v as string);
      }
      continue;
    }
    tensors.push(parseEntry(name, value, fail));
  }

  // Tiling check in data order: each tensor must begin where the previous one ended.
  tensors.sort((a, b) => a.dataOffsets[0] - b.dataOffsets[0] || a.dataOffsets[1] - b.dataOffsets[1]);
  let end = 0;
  let prev: TensorHeaderEntry | undefined;
  for (const t of tensors) {
    const [b, e] = t.dataOffsets;
    if (b < end) {
      fail(
        "offsets",
        `tensor ${JSON.stringify(t.name)} data_offsets [${b}, ${e}] overlap tensor ${JSON.stringify(prev!.name)} data_offsets [${prev!.dataOffsets[0]}, ${prev!.dataOffsets[1]}]`,
      );
    }
    if (b > end) {
      fail(
        "offsets",
        `data bytes [${end}, ${b}) are not covered by any tensor (gap before tensor ${JSON.stringify(t.name)} data_offsets [${b}, ${e}])`,
      );
    }
    end = e;
    prev = t;
  }
  return { metadata, tensors, headerLength: headerBytes.length, dataStart: 8 + headerBytes.length, dataLength: end };
}

function parseEntry(
  name: string,
  value: unknown,
  fail: (problem: "header" | "dtype" | "shape" | "offsets", detail: string) => never,
): TensorHeaderEntry {
  const label = `tensor ${JSON.stringify(name)}`;
  if (!isPlainObject(value)) return fail("header", `${label}: entry must be an object, is ${JSON.stringify(value)}`);
  const { dtype, shape, data_offsets: offsets } = value;
  if (!isSafetensorsDType(dtype)) {
    return fail("dtype", `${label}: unknown dtype ${JSON.stringify(dtype)}; known: ${SAFETENSORS_DTYPES.join(", ")}`);
  }
  if (!Array.isArray(shape) || !shape.every(isSize)) {
    return fail("shape", `${label}: shape must be an array of non-negative integers, is ${JSON.stringify(shape)}`);
  }
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isSize) || offsets[0] > offsets[1]) {
    return fail(
      "offsets",
      `${label}: data_offsets must be [begin, end] with 0 <= begin <= end, is ${JSON.stringify(offsets)}`,
    );
  }
  const byteLength = offsets[1] - offsets[0];
  const needed = numel(shape) * ITEMSIZE[dtype];
  if (byteLength !== needed) {
    fail(
      "shape",
      `${label}: data_offsets [${offsets[0]}, ${offsets[1]}] span ${byteLength} bytes but ${dtype} [${shape.join(", ")}] needs ${needed}`,
    );
  }
  return { name, dtype, shape: [...shape], dataOffsets: [offsets[0], offsets[1]], byteLength };
}

/** What the writer needs to know about a tensor before its bytes exist. */
export interface HeaderSpec {
  readonly name: string;
  readonly dtype: SafetensorsDType;
  readonly shape: readonly number[];
}

/**
 * The order tensors are laid out in: by dtype, in the reverse of the order the reference
 * implementation declares its dtypes (U64, I64, F64, C64, F32, U32, I32, BF16, F16, ...), then by
 * name. That is what Python's `safetensors` writes, and for the same reason: item sizes only shrink
 * along it, so with an 8-byte-aligned data start every tensor begins on a multiple of its own item
 * size and memory-mapping readers can view it in place. Sorting by name also makes the file
 * independent of insertion order.
 */
export function layoutOrder<T extends HeaderSpec>(specs: readonly T[]): T[] {
  const rank = (d: SafetensorsDType) => SAFETENSORS_DTYPES.indexOf(d);
  return [...specs].sort((a, b) => rank(b.dtype) - rank(a.dtype) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/**
 * Builds the length prefix and padded JSON header for tensors already in layout order, returning
 * the bytes to write before the data and each tensor's offsets.
 */
export function encodeHeader(
  specs: readonly HeaderSpec[],
  metadata: Readonly<Record<string, string>>,
  path: string,
): { prefix: Uint8Array; entries: TensorHeaderEntry[] } {
  const json: Record<string, unknown> = {};
  const metaKeys = Object.keys(metadata);
  if (metaKeys.length > 0) {
    const m: Record<string, string> = {};
    for (const k of metaKeys) {
      const v = metadata[k];
      if (typeof v !== "string") {
        throw new TypeError(`${path}: metadata[${JSON.stringify(k)}] must be a string, is ${JSON.stringify(v)}`);
      }
      setOwn(m, k, v);
    }
    setOwn(json, METADATA_KEY, m);
  }
  const entries: TensorHeaderEntry[] = [];
  const seen = new Set<string>();
  let offset = 0;
  for (const s of specs) {
    if (s.name === METADATA_KEY) throw new TypeError(`${path}: "${METADATA_KEY}" is reserved and cannot name a tensor`);
    if (seen.has(s.name)) throw new TypeError(`${path}: tensor name ${JSON.stringify(s.name)} appears twice`);
    seen.add(s.name);
    if (!isSafetensorsDType(s.dtype)) {
      throw new TypeError(
        `${path}: tensor ${JSON.stringify(s.name)}: dtype ${JSON.stringify(s.dtype)} is not one of ${SAFETENSORS_DTYPES.join(", ")}`,
      );
    }
    if (!Array.isArray(s.shape) || !s.shape.every(isSize)) {
      throw new TypeError(
        `${path}: tensor ${JSON.stringify(s.name)}: shape must be an array of non-negative integers, is ${JSON.stringify(s.shape)}`,
      );
    }
    const byteLength = numel(s.shape) * ITEMSIZE[s.dtype];
    const dataOffsets: [number, number] = [offset, offset + byteLength];
    entries.push({ name: s.name, dtype: s.dtype, shape: [...s.shape], dataOffsets, byteLength });
    setOwn(json, s.name, { dtype: s.dtype, shape: [...s.shape], data_offsets: dataOffsets });
    offset += byteLength;
  }
  const body = new TextEncoder().encode(JSON.stringify(json));
  const padded = Math.ceil(body.length / 8) * 8;
  if (padded > MAX_HEADER_LENGTH) {
    throw new TypeError(`${path}: header of ${padded} bytes exceeds the safetensors limit of ${MAX_HEADER_LENGTH}`);
  }
  const prefix = new Uint8Array(8 + padded).fill(0x20, 8 + body.length);
  new DataView(prefix.buffer).setBigUint64(0, BigInt(padded), true);
  prefix.set(body, 8);
  return { prefix, entries };
}
