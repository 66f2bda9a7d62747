/**
 * Byte-range reads from one safetensors file: what lets a rank at world M read only its own
 * segments of a checkpoint written at world N, and the converters copy a tensor a chunk at a time.
 * The header is read and checked by the package's safetensors reader (`SafetensorsFile`: length
 * prefix, JSON, dtypes, offsets tiling the data, file size); that reader reads whole tensors only,
 * so ranges go through a second handle of our own, checked to be a file of the size it validated.
 */
import { open, type FileHandle } from "node:fs/promises";
import { CheckpointFormatError } from "../errors";
import { safetensorsItemsize, type SafetensorsHeader, type TensorHeaderEntry } from "../safetensors/format";
import { SafetensorsFile } from "../safetensors/reader";
import type { BufferTracker } from "./bufferTracker";

// Node refuses single reads above 2 GiB.
const MAX_IO_CHUNK = 1 << 30;

export class RangedSafetensorsFile {
  private readonly byKey: Map<string, TensorHeaderEntry>;

  private constructor(
    readonly path: string,
    readonly header: SafetensorsHeader,
    private readonly handle: FileHandle,
    private readonly tracker: BufferTracker | undefined,
  ) {
    this.byKey = new Map(header.tensors.map((t) => [t.name, t]));
  }

  static async open(path: string, tracker?: BufferTracker): Promise<RangedSafetensorsFile> {
    const checked = await SafetensorsFile.open(path);
    await checked.close();
    const handle = await open(path, "r");
    try {
      const { size } = await handle.stat();
      if (size !== checked.fileSize) {
        throw new CheckpointFormatError(path, "truncated", `changed while being opened: ${checked.fileSize} bytes, then ${size}`);
      }
      return new RangedSafetensorsFile(path, checked.header, handle, tracker);
    } catch (e) {
      await handle.close();
      throw e;
    }
  }

  entry(key: string): TensorHeaderEntry | undefined {
    return this.byKey.get(key);
  }

  /**
   * Reads elements [start, end) of a stored tensor, flattened, into `into` (exactly their bytes
   * long): one positioned read of just those bytes, however large the tensor and the file.
   */
  async readElements(entry: TensorHeaderEntry, start: number, end: number, into: Uint8Array): Promise<void> {
    const item = safetensorsItemsize(entry.dtype);
    if (start < 0 || end < start || end * item > entry.byteLength || into.length !== (end - start) * item) {
      throw new RangeError(`${this.path}: cannot read elements [${start}, ${end}) of ${JSON.stringify(entry.name)} into ${into.length} bytes`);
    }
    const position = this.header.dataStart + entry.dataOffsets[0] + start * item;
    let done = 0;
    while (done < into.length) {
      const { bytesRead } = await this.handle.read(into, done, Math.min(MAX_IO_CHUNK, into.length - done), position + done);
      if (bytesRead === 0) {
        throw new CheckpointFormatError(this.path, "truncated", `truncated: expected ${into.length} bytes at offset ${position}, the file ended after ${done}`);
      }
      done += bytesRead;
    }
    this.tracker?.countRead(into.length);
  }

  async close(): Promise<void> {
    await this.handle.close();
  }
}
