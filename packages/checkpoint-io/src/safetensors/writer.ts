/**
 * Writing safetensors files at the bytes level. The header is computed from names, dtypes and
 * shapes alone, then each tensor's bytes are produced and written in turn, so a writer fed from
 * device tensors holds one tensor on the host at a time. Files are written atomically
 * (temporary name, fsync, rename).
 */
import { writeFileAtomic } from "../atomicFile";
import {
  encodeHeader,
  layoutOrder,
  numel,
  safetensorsItemsize,
  type HeaderSpec,
  type RawTensor,
} from "./format";

/** A tensor whose bytes are produced only when the writer reaches it. */
export interface LazyTensor extends HeaderSpec {
  /** Little-endian row-major bytes; must be exactly numel(shape) * itemsize(dtype) long. */
  bytes(): Uint8Array | Promise<Uint8Array>;
}

function checkRaw(name: string, t: RawTensor, path: string): void {
  if (!(t?.data instanceof Uint8Array)) {
    throw new TypeError(`${path}: tensor ${JSON.stringify(name)}: data must be a Uint8Array`);
  }
}

function checkLength(spec: HeaderSpec, got: number, path: string): void {
  const expected = numel(spec.shape) * safetensorsItemsize(spec.dtype);
  if (got !== expected) {
    throw new RangeError(
      `${path}: tensor ${JSON.stringify(spec.name)}: data is ${got} bytes but ${spec.dtype} [${spec.shape.join(", ")}] needs ${expected}`,
    );
  }
}

function lazyFromRaw(tensors: Readonly<Record<string, RawTensor>>, path: string): LazyTensor[] {
  return Object.entries(tensors).map(([name, t]) => {
    checkRaw(name, t, path);
    return { name, dtype: t.dtype, shape: t.shape, bytes: () => t.data };
  });
}

/**
 * Streams tensors into a safetensors file at `path`. Tensors are laid out by `layoutOrder`
 * (by dtype as Python's `safetensors` does, larger items first, then by name), and the header
 * lists them in that order.
 */
export async function writeSafetensorsLazy(
  path: string,
  tensors: readonly LazyTensor[],
  metadata: Readonly<Record<string, string>> = {},
): Promise<void> {
  await writeSafetensorsInOrder(path, layoutOrder(tensors), metadata);
}

/**
 * As `writeSafetensorsLazy`, but the data lies in the order given and `bytes()` is called in that
 * order: a producer that gathers a sharded unit for a run of tensors can count on it. Readers take
 * any order (they sort by offset); Python's writer sorts by dtype and name, which this skips.
 */
export async function writeSafetensorsInOrder(
  path: string,
  ordered: readonly LazyTensor[],
  metadata: Readonly<Record<string, string>> = {},
): Promise<void> {
  // Built before the file is opened so a bad name, dtype or shape never creates a temporary file.
  const { prefix } = encodeHeader(ordered, metadata, path);
  await writeFileAtomic(path, async (write) => {
    await write(prefix);
    for (const t of ordered) {
      const bytes = await t.bytes();
      checkLength(t, bytes.length, path);
      await write(bytes);
    }
  });
}

/** Writes byte-level tensors and string metadata to `path` as one safetensors file. */
export async function writeSafetensors(
  path: string,
  tensors: Readonly<Record<string, RawTensor>>,
  metadata: Readonly<Record<string, string>> = {},
): Promise<void> {
  const lazy = lazyFromRaw(tensors, path);
  // Names, dtypes and shapes first, then sizes, all before a temporary file exists.
  encodeHeader(lazy, metadata, path);
  for (const t of lazy) checkLength(t, tensors[t.name].data.length, path);
  await writeSafetensorsLazy(path, lazy, metadata);
}

/** The bytes `writeSafetensors` would write, as one buffer (for small files and tests). */
export function encodeSafetensors(
  tensors: Readonly<Record<string, RawTensor>>,
  metadata: Readonly<Record<string, string>> = {},
  label = "<buffer>",
): Uint8Array {
  const ordered = layoutOrder(lazyFromRaw(tensors, label));
  const { prefix, entries } = encodeHeader(ordered, metadata, label);
  const dataLength = entries.length > 0 ? entries[entries.length - 1].dataOffsets[1] : 0;
  const out = new Uint8Array(prefix.length + dataLength);
  out.set(prefix, 0);
  for (const e of entries) {
    const data = tensors[e.name].data;
    checkLength(e, data.length, label);
    out.set(data, prefix.length + e.dataOffsets[0]);
  }
  return out;
}
