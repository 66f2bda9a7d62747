/**
 * Making a finished sharded checkpoint visible at its path, and only a finished one.
 *
 * [Note: replacing a checkpoint directory]
 * Files are replaced by one rename; directories cannot be (rename onto a non-empty directory
 * fails, and Node has no atomic exchange). So a save writes everything into `<path>.tmp-<id>`,
 * index.json last, and then: (1) the previous checkpoint, if any, is renamed aside to
 * `<path>.old-<pid>-<random>`, a name made here, in this call; (2) the new directory is renamed to
 * `<path>` (on failure the old one is renamed back); (3) the aside copy is deleted. At every moment
 * a complete checkpoint exists under one of these names: a save killed before (1) leaves `<path>`
 * as it was and a temporary directory with no index (not a checkpoint: readers say so); one killed
 * between (1) and (2) leaves both complete, which the reader points out when `<path>` is missing.
 * Deletion only ever targets names made in the same call, never a path read from a file, and a
 * `<path>` that is not a sharded checkpoint (a file, a directory with anything else in it) is
 * refused rather than replaced, so a slip of the path never removes a user's directory.
 */
import { randomBytes } from "node:crypto";
import { mkdir, open, readFile, readdir, rename, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { INDEX_FILE, RANK_FILE_NAME, SHARDED_FORMAT } from "./format";

/** A fresh save id: `<pid>-<12 hex digits>`, the shape `parseTemporaryName` recognises in `<path>.tmp-<id>`. */
export function newSaveId(): string {
  return `${process.pid}-${randomBytes(6).toString("hex")}`;
}

const SAVE_ID = /^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$/;

/** `<path>.tmp-<id>`: beside the target (so the final rename stays on one filesystem), named by the id all ranks agreed on. */
export function temporaryDirectoryFor(path: string, id: string): string {
  if (typeof id !== "string" || !SAVE_ID.test(id)) {
    throw new TypeError(`save id must be 1 to 100 letters, digits, "-" or "_", starting with a letter or digit; got ${JSON.stringify(id)}`);
  }
  return `${path}.tmp-${id}`;
}

/**
 * Throws unless `path` is a sharded checkpoint directory and nothing else: an index.json of this
 * format beside rank files only. What `remove` and an overwriting save require before deleting.
 */
export async function assertShardedCheckpointDirectory(path: string, doing: string): Promise<void> {
  const refuse = (why: string): never => {
    throw new Error(`${path} ${why}; refusing to ${doing} it`);
  };
  const info = await stat(path);
  if (!info.isDirectory()) refuse("is not a directory, so not a sharded checkpoint");
  const names = await readdir(path);
  const text = await readFile(join(path, INDEX_FILE), "utf8").catch(() => refuse(`has no readable ${INDEX_FILE}, so it is not a sharded checkpoint`));
  let format: unknown;
  try {
    format = (JSON.parse(text) as { format?: unknown })?.format;
  } catch {
    // Not JSON: refused just below.
  }
  if (format !== SHARDED_FORMAT) refuse(`has an ${INDEX_FILE} that is not a ${SHARDED_FORMAT} index`);
  const foreign = names.filter((n) => n !== INDEX_FILE && !RANK_FILE_NAME.test(n));
  if (foreign.length > 0) refuse(`holds files that are not part of a sharded checkpoint (${foreign.slice(0, 5).join(", ")}${foreign.length > 5 ? ", ..." : ""})`);
}

/** Throws unless a new checkpoint may take `path`: nothing there, an empty directory, or a sharded checkpoint. */
export async function assertReplaceable(path: string): Promise<void> {
  const info = await stat(path).catch((e: NodeJS.ErrnoException) => {
    if (e.code === "ENOENT") return undefined;
    throw e;
  });
  if (!info) return;
  if (info.isDirectory() && (await readdir(path)).length === 0) return;
  await assertShardedCheckpointDirectory(path, "replace");
}

/** An empty temporary directory for the save (a stale one left by an earlier attempt with the same id is cleared). */
export async function prepareTemporaryDirectory(tmp: string): Promise<void> {
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
}

/** Renames the finished directory `tmp` to `path`, keeping any previous checkpoint until then (see the note). */
export async function commitDirectory(tmp: string, path: string): Promise<void> {
  // Checked again here: the path may have changed since the save began.
  await assertReplaceable(path);
  const aside = `${path}.old-${newSaveId()}`;
  let movedAside = false;
  try {
    await rename(path, aside);
    movedAside = true;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
  try {
    await rename(tmp, path);
  } catch (e) {
    if (movedAside) await rename(aside, path).catch(() => undefined);
    throw e;
  }
  await syncDirectory(dirname(path));
  // The new checkpoint is in place: failing to delete the old copy must not report the save as failed
  // (the copy, under its .old- name, is safe to delete by hand).
  if (movedAside) await rm(aside, { recursive: true, force: true }).catch(() => undefined);
}

/** Makes the renames durable; filesystems that cannot fsync a directory skip it (the renames have happened). */
async function syncDirectory(dir: string): Promise<void> {
  const handle = await open(dir, "r").catch(() => undefined);
  await handle?.sync().catch(() => undefined);
  await handle?.close().catch(() => undefined);
}
