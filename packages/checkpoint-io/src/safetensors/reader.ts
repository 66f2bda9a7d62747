/**
 * Reading safetensors files at the bytes level. The header is read and validated first (8 bytes,
 * then N), and tensor data is read tensor by tensor through a file handle, so a multi-gigabyte
 * checkpoint never has to exist as one buffer or string, and a caller that converts each tensor
 * as it arrives (the full checkpoint loader) holds one tensor's bytes at a time.
 * Nothing in a file is executed: the header goes through JSON.parse and strict checks, the rest is
 * copied as bytes.
 */
import { open, type FileHandle } from "node:fs/promises";
import { CheckpointFormatError } from "../errors";
import {
  decodeHeaderLength,
  parseHeader,
  setOwn,
  type RawTensor,
  type SafetensorsHeader,
  type TensorHeaderEntry,
} from "./format";

export interface SafetensorsContents {
  readonly metadata: Readonly<Record<string, string>>;
  /** By name, in data order. */
  readonly tensors: Readonly<Record<string, RawTensor>>;
}

export interface ReadSafetensorsOptions {
  /** Read only these tensors (all when absent); naming one the file lacks is an error. */
  readonly names?: Iterable<string>;
}

// Node refuses single reads above 2 GiB; a tensor larger than that is read in pieces.
const MAX_IO_CHUNK = 1 << 30;

/** Checks the data buffer the header describes against what the file (or buffer) actually holds. */
function checkDataLength(header: SafetensorsHeader, available: number, path: string): void {
  const needed = header.dataLength;
  if (available < needed) {
    const cut = header.tensors.find((t) => t.dataOffsets[1] > available);
    throw new CheckpointFormatError(
      path,
      "truncated",
      `truncated: the header describes ${needed} data bytes but only ${available} follow it` +
        (cut ? ` (tensor ${JSON.stringify(cut.name)} at data_offsets [${cut.dataOffsets[0]}, ${cut.dataOffsets[1]}] is cut)` : ""),
    );
  }
  if (available > needed) {
    throw new CheckpointFormatError(
      path,
      "offsets",
      `${available - needed} bytes after the last tensor (data ends at ${needed}) are not covered by any tensor`,
    );
  }
}

async function readExactly(handle: FileHandle, into: Uint8Array, position: number, path: string): Promise<void> {
  let done = 0;
  while (done < into.length) {
    const length = Math.min(MAX_IO_CHUNK, into.length - done);
    const { bytesRead } = await handle.read(into, done, length, position + done);
    if (bytesRead === 0) {
      throw new CheckpointFormatError(
        path,
        "truncated",
        `truncated: expected ${into.length} bytes at offset ${position}, the file ended after ${done}`,
      );
    }
    done += bytesRead;
  }
}

function notAFile(path: string, directory = true): CheckpointFormatError {
  return new CheckpointFormatError(path, "not_a_file", `is ${directory ? "a directory" : "not a regular file"}, not a safetensors file`);
}

/** An open file whose header has been validated; tensors are read from it one at a time. */
export class SafetensorsFile {
  private constructor(
    readonly path: string,
    readonly header: SafetensorsHeader,
    readonly fileSize: number,
    private readonly handle: FileHandle,
  ) {}

  static async open(path: string): Promise<SafetensorsFile> {
    const handle = await open(path, "r").catch((e: NodeJS.ErrnoException) => {
      // Linux opens a directory for reading and fails at the first read; other systems fail here.
      if (e.code === "EISDIR") throw notAFile(path);
      throw e;
    });
    try {
      const info = await handle.stat();
      if (!info.isFile()) throw notAFile(path, info.isDirectory());
      const { size } = info;
      if (size < 8) {
        throw new CheckpointFormatError(
          path,
          "truncated",
          `truncated: the file is ${size} bytes, shorter than the 8-byte header length that starts a safetensors file`,
        );
      }
      const prefix = new Uint8Array(8);
      await readExactly(handle, prefix, 0, path);
      const n = decodeHeaderLength(prefix, path);
      if (8 + n > size) {
        throw new CheckpointFormatError(
          path,
          "header_length",
          `header length ${n} runs past the end of the file (${size} bytes): the file is truncated or its length prefix is corrupt`,
        );
      }
      const headerBytes = new Uint8Array(n);
      await readExactly(handle, headerBytes, 8, path);
      const header = parseHeader(headerBytes, path);
      checkDataLength(header, size - header.dataStart, path);
      return new SafetensorsFile(path, header, size, handle);
    } catch (e) {
      await handle.close();
      throw e;
    }
  }

  /** Reads one tensor's bytes into a fresh (hence suitably aligned) buffer. */
  async read(entry: TensorHeaderEntry): Promise<RawTensor> {
    const data = new Uint8Array(entry.byteLength);
    await readExactly(this.handle, data, this.header.dataStart + entry.dataOffsets[0], this.path);
    return { dtype: entry.dtype, shape: entry.shape, data };
  }

  /** The entries for `names` (all, in data order, when absent); fails naming any missing one. */
  select(names?: Iterable<string>): TensorHeaderEntry[] {
    if (names === undefined) return [...this.header.tensors];
    const byName = new Map(this.header.tensors.map((t) => [t.name, t]));
    const out: TensorHeaderEntry[] = [];
    for (const name of names) {
      const entry = byName.get(name);
      if (!entry) {
        throw new RangeError(
          `${this.path}: no tensor named ${JSON.stringify(name)}; the file holds ${this.header.tensors.length} tensors` +
            (this.header.tensors.length > 0 ? ` (first: ${JSON.stringify(this.header.tensors[0].name)})` : ""),
        );
      }
      out.push(entry);
    }
    return out;
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}

/** Reads and validates only the header: names, dtypes, shapes, offsets and metadata. */
export async function readSafetensorsHeader(path: string): Promise<SafetensorsHeader & { fileSize: number }> {
  const file = await SafetensorsFile.open(path);
  await file.close();
  return { ...file.header, fileSize: file.fileSize };
}

/** Reads a whole safetensors file (or the tensors named in `options.names`). */
export async function readSafetensors(path: string, options: ReadSafetensorsOptions = {}): Promise<SafetensorsContents> {
  const file = await SafetensorsFile.open(path);
  try {
    const tensors: Record<string, RawTensor> = {};
    for (const entry of file.select(options.names)) setOwn(tensors, entry.name, await file.read(entry));
    return { metadata: file.header.metadata, tensors };
  } finally {
    await file.close();
  }
}

/**
 * Parses a safetensors file already in memory (received over the network, embedded in a test).
 * The tensors' `data` are views into `bytes`, not copies. `label` stands in for the path in errors.
 */
export function decodeSafetensors(bytes: Uint8Array, label = "<buffer>"): SafetensorsContents {
  if (bytes.length < 8) {
    throw new CheckpointFormatError(
      label,
      "truncated",
      `truncated: the buffer is ${bytes.length} bytes, shorter than the 8-byte header length that starts a safetensors file`,
    );
  }
  const n = decodeHeaderLength(bytes.subarray(0, 8), label);
  if (8 + n > bytes.length) {
    throw new CheckpointFormatError(
      label,
      "header_length",
      `header length ${n} runs past the end of the buffer (${bytes.length} bytes): truncated or a corrupt length prefix`,
    );
  }
  const header = parseHeader(bytes.subarray(8, 8 + n), label);
  checkDataLength(header, bytes.length - header.dataStart, label);
  const tensors: Record<string, RawTensor> = {};
  for (const t of header.tensors) {
    const begin = header.dataStart + t.dataOffsets[0];
    setOwn(tensors, t.name, { dtype: t.dtype, shape: t.shape, data: bytes.subarray(begin, begin + t.byteLength) });
  }
  return { metadata: header.metadata, tensors };
}
