/**
 * Writing a file so that readers only ever see the old contents or the complete new ones
 * (DESIGN.md, decision 9): the bytes go to a temporary name beside the target, are fsynced, and
 * the temporary file is renamed over the target. A failure at any point removes the temporary
 * file and leaves whatever was at the target untouched.
 */
import { randomBytes } from "node:crypto";
import { mkdir, open, rename, rm } from "node:fs/promises";
import { dirname } from "node:path";

// Node refuses single writes above 2 GiB; larger tensors are written in pieces.
const MAX_IO_CHUNK = 1 << 30;

/** Appends bytes to the file being written. */
export type WriteChunk = (chunk: Uint8Array) => Promise<void>;

/** The temporary name used for `path`: same directory (so rename is atomic), unique per writer. */
export function temporaryPathFor(path: string): string {
  return `${path}.tmp-${process.pid}-${randomBytes(6).toString("hex")}`;
}

// Exactly what temporaryPathFor appends: the writer's pid and 6 random bytes in lower-case hex.
const TEMPORARY_NAME = /^(.+)\.tmp-(\d+)-([0-9a-f]{12})$/;

/**
 * The target file name and writer pid of a temporary file name made by `temporaryPathFor`, or
 * undefined for any other name. A write killed half-way (SIGKILL, OOM, power loss) leaves such a
 * file behind; callers that list a checkpoint directory skip them, and may remove those whose
 * writer is gone.
 */
export function parseTemporaryName(name: string): { target: string; pid: number } | undefined {
  const m = TEMPORARY_NAME.exec(name);
  return m ? { target: m[1], pid: Number(m[2]) } : undefined;
}

/**
 * Creates parent directories, lets `produce` stream the contents through `write`, then makes the
 * result visible at `path` in one rename. Rethrows whatever `produce` or the filesystem throws.
 */
export async function writeFileAtomic(path: string, produce: (write: WriteChunk) => Promise<void>): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true });
  const tmp = temporaryPathFor(path);
  // "wx": never clobber a file that happens to have the temporary name.
  const handle = await open(tmp, "wx", 0o644);
  let closed = false;
  let renamed = false;
  try {
    let position = 0;
    await produce(async (chunk) => {
      let done = 0;
      while (done < chunk.length) {
        const length = Math.min(MAX_IO_CHUNK, chunk.length - done);
        const { bytesWritten } = await handle.write(chunk, done, length, position);
        done += bytesWritten;
        position += bytesWritten;
      }
    });
    // Data must be on disk before the rename is, or a crash could leave a complete-looking empty file.
    await handle.sync();
    closed = true;
    await handle.close();
    await rename(tmp, path);
    renamed = true;
  } finally {
    if (!closed) await handle.close().catch(() => undefined);
    if (!renamed) await rm(tmp, { force: true }).catch(() => undefined);
  }
  await syncDirectory(dir);
}

/** Makes the rename itself durable. Some platforms cannot fsync a directory; there it is skipped. */
async function syncDirectory(dir: string): Promise<void> {
  let handle;
  try {
    handle = await open(dir, "r");
    await handle.sync();
  } catch {
    // Windows and some network filesystems refuse; the rename has still happened.
  } finally {
    await handle?.close().catch(() => undefined);
  }
}
