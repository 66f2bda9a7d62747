/**
 * Reading a sharded checkpoint with bounded memory: the index is read and validated at open, rank
 * files are opened only when a read first needs them (their headers checked against the index
 * then), and a read of elements [start, end) of a tensor reads exactly the bytes of that range,
 * by position, from the pieces that hold them. This is what lets FSDP at world M read only its own
 * segments of a checkpoint written at world N, and the converters copy a tensor a chunk at a time.
 */
import type { CheckpointMeta } from "@fulgur/core";
import type { Tensor } from "@fulgur/tensor";
import { readFile, readdir, stat } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { CheckpointFormatError } from "../errors";
import { safetensorsItemsize, type SafetensorsDType } from "../safetensors/format";
import { rawToTensor } from "../tensorBytes";
import { BufferTracker } from "./bufferTracker";
import { INDEX_FILE, numelOf, type PieceEntry, type ShardedIndex, type ShardedTensorEntry } from "./format";
import { checkPieceInFile, parseShardedIndex } from "./indexValidation";
import { RangedSafetensorsFile } from "./rangeFile";

export interface ShardedTensorInfo {
  readonly name: string;
  readonly shape: readonly number[];
  /** The safetensors dtype; `read` loads it as the full format does (F32 → float32, BF16 → bfloat16, ...). */
  readonly dtype: SafetensorsDType;
  readonly numel: number;
  readonly partial: boolean;
  readonly pieces: readonly PieceEntry[];
}

export interface OpenShardedOptions {
  /** Counts the buffers reads allocate and the bytes they read (tests, the CLI's statistics). */
  readonly tracker?: BufferTracker;
}

export interface ShardedReadOptions {
  /** Where the tensor goes; "cpu" when absent. */
  readonly device?: string;
}

/**
 * The error for a missing checkpoint. A save killed between moving the previous checkpoint aside and
 * renaming the new one into place leaves both, complete, under generated names: say where they are.
 */
async function missingCheckpoint(path: string): Promise<Error> {
  const base = basename(path);
  const siblings = (await readdir(dirname(path)).catch(() => [] as string[])).filter((n) => n.startsWith(`${base}.old-`) || n.startsWith(`${base}.tmp-`));
  const complete: string[] = [];
  for (const n of siblings.sort()) if (await stat(join(dirname(path), n, INDEX_FILE)).catch(() => undefined)) complete.push(n);
  const hint =
    complete.length > 0
      ? `; a save was interrupted while replacing it, and these complete checkpoints remain beside it: ${complete.join(", ")} (rename the one to keep to ${base})`
      : "";
  return Object.assign(new Error(`${path}: no such sharded checkpoint${hint}`), { code: "ENOENT", path });
}

export class ShardedCheckpointReader {
  private readonly tensors: Map<string, ShardedTensorEntry>;
  /** Which pieces each file holds, to check them against its header when it is first opened. */
  private readonly piecesByFile = new Map<string, { name: string; piece: PieceEntry }[]>();
  private readonly files = new Map<string, Promise<RangedSafetensorsFile>>();
  private closed = false;

  private constructor(
    /** The checkpoint directory. */
    readonly path: string,
    readonly index: ShardedIndex,
    readonly tracker: BufferTracker,
  ) {
    this.tensors = new Map(Object.entries(index.tensors));
    for (const [name, t] of this.tensors) {
      for (const piece of t.pieces) {
        const list = this.piecesByFile.get(piece.file) ?? [];
        list.push({ name, piece });
        this.piecesByFile.set(piece.file, list);
      }
    }
  }

  static async open(path: string, options: OpenShardedOptions = {}): Promise<ShardedCheckpointReader> {
    const dir = resolve(path);
    const info = await stat(dir).catch(() => undefined);
    if (!info) throw await missingCheckpoint(dir);
    if (!info.isDirectory()) {
      throw new CheckpointFormatError(dir, "format", "is a file, not a sharded checkpoint (a directory with index.json); a full checkpoint loads with FullCheckpointIO");
    }
    const indexPath = join(dir, INDEX_FILE);
    const text = await readFile(indexPath, "utf8").catch((e: NodeJS.ErrnoException) => {
      if (e.code !== "ENOENT") throw e;
      throw new CheckpointFormatError(
        dir,
        "format",
        `has no ${INDEX_FILE}, so it is not a sharded checkpoint (a save that did not finish leaves its rank files in <path>.tmp-<id> without one)`,
      );
    });
    return new ShardedCheckpointReader(dir, parseShardedIndex(text, indexPath), options.tracker ?? new BufferTracker());
  }

  get meta(): CheckpointMeta {
    return this.index.meta;
  }

  /** The world size the checkpoint was written at. */
  get worldSize(): number {
    return this.index.world_size;
  }

  /** Tensor names, sorted. */
  names(): string[] {
    return [...this.tensors.keys()].sort();
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): ShardedTensorInfo {
    const t = this.entry(name);
    return { name, shape: t.shape, dtype: t.dtype, numel: numelOf(t.shape), partial: t.partial === true, pieces: t.pieces };
  }

  /**
   * Reads elements [start, end) of tensor `name`, flattened, into `into` (exactly their bytes long,
   * little-endian), reading only those bytes from the files that hold them.
   */
  async readInto(name: string, start: number, end: number, into: Uint8Array): Promise<void> {
    const t = this.entry(name);
    const item = safetensorsItemsize(t.dtype);
    this.checkRange(name, t, start, end);
    if (into.length !== (end - start) * item) {
      throw new RangeError(`${this.path}: elements [${start}, ${end}) of ${JSON.stringify(name)} are ${(end - start) * item} bytes; the buffer has ${into.length}`);
    }
    let covered = start;
    for (const p of t.pieces) {
      if (p.end <= start || p.start >= end) continue;
      const [s, e] = [Math.max(p.start, start), Math.min(p.end, end)];
      if (s > covered) break;
      const file = await this.file(p.file);
      await file.readElements(file.entry(p.key)!, s - p.start, e - p.start, into.subarray((s - start) * item, (e - start) * item));
      covered = e;
    }
    if (covered < end) {
      const next = t.pieces.find((p) => p.end > covered);
      throw new RangeError(
        `${this.path}: tensor ${JSON.stringify(name)} is partial and elements [${covered}, ${Math.min(end, next?.start ?? end)}) are in no piece`,
      );
    }
  }

  /** The bytes of elements [start, end) (default: the whole tensor), in a fresh buffer. */
  async readBytes(name: string, start = 0, end?: number): Promise<Uint8Array> {
    const t = this.entry(name);
    const stop = end ?? numelOf(t.shape);
    this.checkRange(name, t, start, stop);
    const bytes = this.tracker.allocate((stop - start) * safetensorsItemsize(t.dtype));
    try {
      await this.readInto(name, start, stop, bytes);
    } catch (e) {
      this.tracker.release(bytes);
      throw e;
    }
    return bytes;
  }

  /**
   * Tensor `name` on `device`: the whole tensor in its shape when no range is given, otherwise
   * elements [start, end) (end defaulting to the last) as a 1-D tensor.
   */
  async read(name: string, start?: number, end?: number, options: ShardedReadOptions = {}): Promise<Tensor> {
    const t = this.entry(name);
    const whole = start === undefined && end === undefined;
    const [s, e] = [start ?? 0, end ?? numelOf(t.shape)];
    const data = await this.readBytes(name, s, e);
    try {
      return rawToTensor({ dtype: t.dtype, shape: whole ? t.shape : [e - s], data }, name, { device: options.device, path: this.path });
    } finally {
      this.tracker.release(data);
    }
  }

  /** Closes the rank files opened so far; the reader cannot read afterwards. */
  async close(): Promise<void> {
    this.closed = true;
    const opened = [...this.files.values()];
    this.files.clear();
    await Promise.all(opened.map((f) => f.then((file) => file.close()).catch(() => undefined)));
  }

  private entry(name: string): ShardedTensorEntry {
    const t = this.tensors.get(name);
    if (!t) {
      const names = this.names();
      throw new RangeError(
        `${this.path}: no tensor named ${JSON.stringify(name)}; the checkpoint holds ${names.length}` + (names.length > 0 ? ` (first: ${JSON.stringify(names[0])})` : ""),
      );
    }
    return t;
  }

  private checkRange(name: string, t: ShardedTensorEntry, start: number, end: number): void {
    const numel = numelOf(t.shape);
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || start > end || end > numel) {
      throw new RangeError(`${this.path}: [${start}, ${end}) is not a range of tensor ${JSON.stringify(name)}'s ${numel} elements`);
    }
  }

  /** The rank file `name`, opened on first use and checked against every piece the index puts in it. */
  private file(name: string): Promise<RangedSafetensorsFile> {
    if (this.closed) return Promise.reject(new Error(`${this.path}: the reader is closed`));
    let opened = this.files.get(name);
    if (!opened) {
      const path = join(this.path, name);
      opened = RangedSafetensorsFile.open(path, this.tracker).then(async (file) => {
        try {
          for (const { name: tensor, piece } of this.piecesByFile.get(name) ?? []) {
            checkPieceInFile(tensor, this.tensors.get(tensor)!, piece, file.entry(piece.key), path);
          }
          return file;
        } catch (e) {
          await file.close();
          throw e;
        }
      });
      this.files.set(name, opened);
    }
    return opened;
  }
}

/** Opens the sharded checkpoint in directory `path` for reading (see ShardedCheckpointReader). */
export function openShardedCheckpoint(path: string, options: OpenShardedOptions = {}): Promise<ShardedCheckpointReader> {
  return ShardedCheckpointReader.open(path, options);
}
