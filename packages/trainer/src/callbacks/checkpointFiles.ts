/**
 * The files of a ModelCheckpoint's directory, found by listing it. A checkpoint is data (DESIGN.md
 * decision 9): nothing read from a checkpoint ever names a file to delete or write; the callback
 * decides from what it finds in its own directory, by plain file names, and from the checkpoint
 * IO's own temporary naming.
 */
import { readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { parseTemporaryName, readFullCheckpointMeta } from "@fulgur/checkpoint-io";

export const LAST_NAME = "last.safetensors";
const EXTENSION = ".safetensors";

/** A name that stays inside the directory it is joined to: no separator, not "." or "..". */
export function isPlainName(name: unknown): name is string {
  return typeof name === "string" && name !== "" && name !== "." && name !== ".." && !/[/\\\0]/.test(name);
}

/**
 * The names a filename template can produce (`epoch={epoch}-step={step}` gives
 * /^epoch=.*-step=.*\.safetensors$/): the callback's own names, which it may remove when a
 * restored top-k entry drops out. Any other file in the directory is the user's.
 */
export function templatePattern(template: string): RegExp {
  const parts = template.split(/\{[^}]*\}/).map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  return new RegExp(`^${parts.join(".*")}${EXTENSION.replace(".", "\\.")}$`);
}

/** The checkpoint files in `dir` (regular files ending in .safetensors; unfinished writes excluded). */
export function listCheckpointFiles(dir: string): Set<string> {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return new Set();
  }
  return new Set(entries.filter((e) => e.isFile() && e.name.endsWith(EXTENSION) && !parseTemporaryName(e.name)).map((e) => e.name));
}

/** Whether a process of this pid runs on this machine (EPERM: it does, as another user). */
function running(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Removes the temporaries a killed save left in `dir`: only names of the checkpoint IO's own
 * temporary pattern whose target is one of `ours`, and whose writer process is gone (a live
 * writer, this process's async save for one, is mid-write). Returns the names removed.
 */
export function removeStaleTemporaries(dir: string, ours: (target: string) => boolean): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const removed: string[] = [];
  for (const name of names) {
    const tmp = parseTemporaryName(name);
    if (!tmp || !ours(tmp.target) || running(tmp.pid)) continue;
    rmSync(join(dir, name), { force: true });
    removed.push(name);
  }
  return removed;
}

/**
 * The optimizer step a Trainer checkpoint file holds, read from its header only; undefined when
 * the file is missing, unreadable or not a Trainer checkpoint (nothing to protect then).
 */
export async function checkpointStep(path: string): Promise<number | undefined> {
  try {
    const loop = (await readFullCheckpointMeta(path)).loop as { globalStep?: unknown } | undefined;
    return typeof loop?.globalStep === "number" ? loop.globalStep : undefined;
  } catch {
    return undefined;
  }
}
