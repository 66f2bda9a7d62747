/**
 * HashedCheckpointIO: a third-party CheckpointIO. Each checkpoint is the usual full checkpoint (one
 * safetensors file, written by @fulgur/checkpoint-io) plus a small JSON sidecar holding the file's
 * SHA-256, and loading refuses a file that no longer matches it: a checkpoint changed after it was
 * saved (by hand, by a bad copy, by a bit flip in storage) fails with a clear message instead of
 * resuming from weights nobody saved.
 *
 * The checks are made when a checkpoint is loaded, against the file at rest: this is not a guard
 * against a writer that changes the file while it is being loaded.
 */
import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import { basename } from "node:path";
import { CONTRACT_VERSION, type Checkpoint, type CheckpointIO } from "@fulgur/core";
import { FullCheckpointIO, writeFileAtomic } from "@fulgur/checkpoint-io";

/** The sidecar's format name and version: a reader refuses what it does not know, naming it (STYLE.md). */
export const SIDECAR_FORMAT = "fulgur-example.sha256";
export const SIDECAR_VERSION = 1;

export interface Sidecar {
  readonly format: typeof SIDECAR_FORMAT;
  readonly version: typeof SIDECAR_VERSION;
  /** The checkpoint's file name, so a sidecar copied beside another file is noticed. */
  readonly file: string;
  readonly bytes: number;
  readonly sha256: string;
}

/** The checkpoint does not match its sidecar, or has none: it is not loaded. */
export class CheckpointIntegrityError extends Error {
  override readonly name = "CheckpointIntegrityError";
  constructor(
    readonly path: string,
    message: string,
  ) {
    super(message);
  }
}

export function sidecarPath(path: string): string {
  return `${path}.sha256.json`;
}

/** SHA-256 and size of a file, read in chunks (checkpoints can be larger than memory). */
export async function hashFile(path: string): Promise<{ sha256: string; bytes: number }> {
  const hash = createHash("sha256");
  let bytes = 0;
  for await (const chunk of createReadStream(path)) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { sha256: hash.digest("hex"), bytes };
}

/** The sidecar of `path`, checked for its format, version and file name. */
export async function readSidecar(path: string): Promise<Sidecar> {
  const where = sidecarPath(path);
  let text: string;
  try {
    text = await readFile(where, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    throw new CheckpointIntegrityError(
      path,
      `${path} has no checksum file (${where}); refusing to load a checkpoint that cannot be verified ` +
        "(was it saved by another CheckpointIO?)",
    );
  }
  let s: Partial<Sidecar>;
  try {
    s = JSON.parse(text) as Partial<Sidecar>;
  } catch (err) {
    throw new CheckpointIntegrityError(path, `${where} is not valid JSON: ${(err as Error).message}`);
  }
  if (s.format !== SIDECAR_FORMAT || s.version !== SIDECAR_VERSION) {
    throw new CheckpointIntegrityError(
      path,
      `${where} is format ${JSON.stringify(s.format)} version ${JSON.stringify(s.version)}; this reader knows ${SIDECAR_FORMAT} version ${SIDECAR_VERSION}`,
    );
  }
  if (s.file !== basename(path)) {
    throw new CheckpointIntegrityError(path, `${where} is the checksum of ${JSON.stringify(s.file)}, not of ${JSON.stringify(basename(path))}`);
  }
  if (typeof s.sha256 !== "string" || !Number.isInteger(s.bytes)) {
    throw new CheckpointIntegrityError(path, `${where} lacks sha256 (a hex string) or bytes (an integer)`);
  }
  return s as Sidecar;
}

// #region guide
export class HashedCheckpointIO implements CheckpointIO {
  readonly name = "hashed";
  readonly contractVersion = CONTRACT_VERSION;

  /** `inner` writes and reads the checkpoint itself; the sidecar is this class's whole job. */
  constructor(private readonly inner: CheckpointIO = new FullCheckpointIO()) {}

  async save(checkpoint: Checkpoint, path: string): Promise<void> {
    // Both writes are atomic (temporary name, then rename). A crash between them leaves the new file
    // beside the old sidecar, which no longer matches: loading then refuses rather than trusting it.
    await this.inner.save(checkpoint, path);
    const { sha256, bytes } = await hashFile(path);
    const sidecar: Sidecar = { format: SIDECAR_FORMAT, version: SIDECAR_VERSION, file: basename(path), bytes, sha256 };
    await writeFileAtomic(sidecarPath(path), async (write) => write(new TextEncoder().encode(`${JSON.stringify(sidecar, null, 2)}\n`)));
  }

  async load(path: string, options?: { device?: string }): Promise<Checkpoint> {
    const expected = await readSidecar(path);
    const actual = await hashFile(path);
    if (actual.sha256 !== expected.sha256 || actual.bytes !== expected.bytes) {
      throw new CheckpointIntegrityError(
        path,
        `${path} does not match its checksum file ${sidecarPath(path)}: ` +
          `SHA-256 ${actual.sha256} over ${actual.bytes} bytes, recorded ${expected.sha256} over ${expected.bytes} bytes. ` +
          "The checkpoint changed after it was saved; refusing to load it",
      );
    }
    return this.inner.load(path, options);
  }

  async remove(path: string): Promise<void> {
    await this.inner.remove(path);
    await rm(sidecarPath(path), { force: true });
  }
}
// #endregion guide
