/**
 * The "full" checkpoint format: every tensor of a checkpoint in one safetensors file, readable by
 * Python's `safetensors` as is. The checkpoint's `meta` rides in the header's `__metadata__`
 * (a map of strings) as JSON under "fulgur", beside a format name and version that the loader
 * checks, so a future layout is refused by name instead of misread.
 *
 * Saving copies one tensor to the host at a time; loading reads and converts one tensor at a time
 * and disposes what it made if a later tensor fails.
 */
import { CONTRACT_VERSION, type Checkpoint, type CheckpointIO, type CheckpointMeta } from "@fulgur/core";
import type { Tensor } from "@fulgur/tensor";
import { readdir, rm, stat } from "node:fs/promises";
import { parseTemporaryName } from "./atomicFile";
import { assertJsonValue } from "./checkpointMeta";
import { CheckpointFormatError } from "./errors";
import { hasOwn, setOwn } from "./safetensors/format";
import { SafetensorsFile } from "./safetensors/reader";
import { type LazyTensor, writeSafetensorsInOrder, writeSafetensorsLazy } from "./safetensors/writer";
import { assertTensorLike, lazyTensor, rawToTensor } from "./tensorBytes";

export const FULL_FORMAT = "fulgur.full";
export const FULL_FORMAT_VERSION = "1";
/** `__metadata__` keys this format owns. */
export const METADATA_FORMAT_KEY = "format";
export const METADATA_VERSION_KEY = "format_version";
export const METADATA_META_KEY = "fulgur";

/** The `__metadata__` a full checkpoint with this meta carries. */
export function encodeFullCheckpointMetadata(meta: CheckpointMeta): Record<string, string> {
  assertJsonValue(meta, "checkpoint.meta");
  if (Array.isArray(meta)) throw new TypeError("checkpoint.meta must be an object, is an array");
  return {
    [METADATA_FORMAT_KEY]: FULL_FORMAT,
    [METADATA_VERSION_KEY]: FULL_FORMAT_VERSION,
    [METADATA_META_KEY]: JSON.stringify(meta),
  };
}

/**
 * The checkpoint meta stored in a file's `__metadata__`: `{}` for a plain safetensors file from
 * another tool (no Fulgur keys; a foreign "format" such as PyTorch's "pt" is fine), the decoded
 * meta for a full checkpoint of a known version, and a CheckpointFormatError for any other Fulgur
 * format or version.
 */
export function decodeFullCheckpointMetadata(metadata: Readonly<Record<string, string>>, path: string): CheckpointMeta {
  const format = hasOwn(metadata, METADATA_FORMAT_KEY) ? metadata[METADATA_FORMAT_KEY] : undefined;
  const isFulgur = hasOwn(metadata, METADATA_META_KEY) || (format !== undefined && format.startsWith("fulgur"));
  if (!isFulgur) return {};
  if (format === undefined) {
    throw new CheckpointFormatError(path, "format", `has "${METADATA_META_KEY}" metadata but no "${METADATA_FORMAT_KEY}"; expected "${FULL_FORMAT}"`);
  }
  if (format !== FULL_FORMAT) {
    throw new CheckpointFormatError(
      path,
      "format",
      `is a checkpoint of format ${JSON.stringify(format)}, not ${JSON.stringify(FULL_FORMAT)}; load it with the checkpoint IO for that format`,
    );
  }
  const version = hasOwn(metadata, METADATA_VERSION_KEY) ? metadata[METADATA_VERSION_KEY] : undefined;
  if (version !== FULL_FORMAT_VERSION) {
    throw new CheckpointFormatError(
      path,
      "format",
      `${FULL_FORMAT} format_version ${version === undefined ? "is missing" : JSON.stringify(version)}; this reader knows only version ${JSON.stringify(FULL_FORMAT_VERSION)}` +
        (version !== undefined ? " (written by a newer Fulgur? upgrade @fulgur/checkpoint-io)" : ""),
    );
  }
  if (!hasOwn(metadata, METADATA_META_KEY)) return {};
  let meta: unknown;
  try {
    meta = JSON.parse(metadata[METADATA_META_KEY]);
  } catch (e) {
    throw new CheckpointFormatError(path, "metadata", `__metadata__["${METADATA_META_KEY}"] is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof meta !== "object" || meta === null || Array.isArray(meta)) {
    throw new CheckpointFormatError(path, "metadata", `__metadata__["${METADATA_META_KEY}"] must hold a JSON object, holds ${JSON.stringify(meta)}`);
  }
  return meta as CheckpointMeta;
}

/**
 * The meta of a full checkpoint, read from its header alone (a few kilobytes, whatever the size of
 * the tensors): what a caller needs to know which step a file holds before overwriting it.
 * `{}` for a plain safetensors file, as `decodeFullCheckpointMetadata`.
 */
export async function readFullCheckpointMeta(path: string): Promise<CheckpointMeta> {
  const file = await SafetensorsFile.open(path);
  try {
    return decodeFullCheckpointMetadata(file.header.metadata, path);
  } finally {
    await file.close();
  }
}

/**
 * The error for a directory given where a full checkpoint is expected (a resume's `ckptPath`
 * pointing at the checkpoint directory is the usual slip), naming the checkpoints inside it so the
 * user can pick one. Unfinished writes (temporary names) are not checkpoints and are not offered.
 */
async function directoryGiven(path: string): Promise<CheckpointFormatError> {
  const names = (await readdir(path).catch(() => [] as string[]))
    .filter((n) => n.endsWith(".safetensors") && parseTemporaryName(n) === undefined)
    .sort();
  const what = "is a directory, not a full checkpoint (one .safetensors file); ";
  return new CheckpointFormatError(
    path,
    "not_a_file",
    what + (names.length > 0 ? `pass one of the checkpoints in it: ${names.join(", ")}` : "it holds no .safetensors file"),
  );
}

/** Checks a checkpoint's shape, naming the first bad field, before any file is touched. */
export function assertCheckpoint(checkpoint: Checkpoint): void {
  if (typeof checkpoint !== "object" || checkpoint === null) {
    throw new TypeError(`checkpoint must be an object { tensors, meta }, got ${checkpoint === null ? "null" : typeof checkpoint}`);
  }
  const { tensors, meta } = checkpoint;
  if (typeof tensors !== "object" || tensors === null || Array.isArray(tensors)) {
    throw new TypeError(`checkpoint.tensors must be an object of tensors by name, got ${Array.isArray(tensors) ? "an array" : typeof tensors}`);
  }
  for (const [name, t] of Object.entries(tensors)) assertTensorLike(t, `checkpoint.tensors[${JSON.stringify(name)}]`);
  if (typeof meta !== "object" || meta === null || Array.isArray(meta)) {
    throw new TypeError(`checkpoint.meta must be a JSON object, got ${meta === null ? "null" : Array.isArray(meta) ? "an array" : typeof meta}`);
  }
  assertJsonValue(meta, "checkpoint.meta");
}

export interface FullLoadOptions {
  /** Where the tensors go (default: the CPU). */
  readonly device?: string;
  /** Which tensors to read, by name (default: all); the others are never read from the file. */
  readonly select?: (name: string) => boolean;
}

export class FullCheckpointIO implements CheckpointIO {
  readonly name = "full";
  readonly contractVersion = CONTRACT_VERSION;

  async save(checkpoint: Checkpoint, path: string): Promise<void> {
    assertCheckpoint(checkpoint);
    const metadata = encodeFullCheckpointMetadata(checkpoint.meta);
    const lazy = Object.entries(checkpoint.tensors).map(([name, t]) => lazyTensor(name, t));
    await writeSafetensorsLazy(path, lazy, metadata);
  }

  /**
   * The streamed form of `save`: each tensor's bytes are produced when the writer reaches it, in
   * the order given (a sharded strategy gathers one unit at a time for a run of its tensors), so
   * the host holds about one unit, never the model. The same file as `save` writes, read the same.
   */
  async saveStreamed(tensors: readonly LazyTensor[], meta: CheckpointMeta, path: string): Promise<void> {
    await writeSafetensorsInOrder(path, tensors, encodeFullCheckpointMetadata(meta));
  }

  /**
   * Every tensor (or those `select` keeps: a rank that holds part of a model reads only its own)
   * on `device`, one at a time.
   */
  async load(path: string, options: FullLoadOptions = {}): Promise<Checkpoint> {
    if ((await stat(path).catch(() => undefined))?.isDirectory()) throw await directoryGiven(path);
    const file = await SafetensorsFile.open(path);
    try {
      const meta = decodeFullCheckpointMetadata(file.header.metadata, path);
      const tensors: Record<string, Tensor> = {};
      try {
        for (const entry of file.select()) {
          if (options.select && !options.select(entry.name)) continue;
          const raw = await file.read(entry);
          setOwn(tensors, entry.name, rawToTensor(raw, entry.name, { device: options.device, path }));
        }
      } catch (e) {
        for (const t of Object.values(tensors)) t.dispose();
        throw e;
      }
      return { tensors, meta };
    } finally {
      await file.close();
    }
  }

  /** Deletes the checkpoint file; a missing file is not an error (the goal is that it is gone). */
  async remove(path: string): Promise<void> {
    const info = await stat(path).catch((e: NodeJS.ErrnoException) => {
      if (e.code === "ENOENT") return undefined;
      throw e;
    });
    if (info?.isDirectory()) {
      throw new Error(`${path} is a directory, not a full checkpoint file; refusing to remove it`);
    }
    await rm(path, { force: true });
  }
}
