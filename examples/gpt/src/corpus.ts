/**
 * The demo's training text and its fingerprint.
 *
 * By default the demo trains on this repository's own text. Files that builds and runs generate
 * (`npm run docs` writes docs/api, builds write dist, runs write runs/) are left out: they change
 * from one checkout to the next, and a resumed run would quietly continue on different data.
 *
 * A checkpoint records what the run trained on (file names and sizes, and a hash of the bytes), and
 * a resume compares it with what it is about to train on, so a change is said out loud.
 */
import { createHash } from "node:crypto";
import { statSync } from "node:fs";
import { isAbsolute, relative, sep } from "node:path";
import { listTextFiles } from "@fulgur/trainer";

/** Path segments of generated output: never part of the default corpus. */
const GENERATED_DIRS = new Set(["node_modules", "dist", "coverage", "runs", "fulgur_logs", "lightning_logs", "checkpoints"]);
/** Generated trees named by their path from the repository root. */
const GENERATED_PATHS = ["docs/api"];

/** Whether `file` (under `root`) is generated output rather than source text. */
export function isGenerated(file: string, root: string): boolean {
  const rel = relative(root, file);
  if (rel.startsWith("..") || isAbsolute(rel)) return false;
  const parts = rel.split(sep);
  if (parts.some((p) => GENERATED_DIRS.has(p))) return true;
  const posix = parts.join("/");
  return GENERATED_PATHS.some((g) => posix === g || posix.startsWith(`${g}/`));
}

/** The text files under `roots` (inside the repository `root`) that are not generated output. */
export function defaultCorpus(root: string, roots: readonly string[]): string[] {
  return listTextFiles(roots).filter((f) => !isGenerated(f, root));
}

/** What a run trained on: every file with its size, and the hash of the bytes read from them. */
export interface DataFingerprint {
  /** [name, bytes]: names relative to the repository root when inside it, else absolute. */
  readonly files: [string, number][];
  readonly bytes: number;
  /** sha256 of the bytes the dataset holds, hex. */
  readonly sha256: string;
}

export function fingerprint(files: readonly string[], tokens: Uint8Array, root: string): DataFingerprint {
  const name = (f: string): string => {
    const rel = relative(root, f);
    return rel.startsWith("..") || isAbsolute(rel) ? f : rel.split(sep).join("/");
  };
  return {
    files: files.map((f) => [name(f), statSync(f).size]),
    bytes: tokens.length,
    sha256: createHash("sha256").update(tokens).digest("hex"),
  };
}

function isFingerprint(v: unknown): v is DataFingerprint {
  const f = v as DataFingerprint | null;
  return typeof f === "object" && f !== null && Array.isArray(f.files) && typeof f.bytes === "number" && typeof f.sha256 === "string";
}

/**
 * How the data of `now` differs from the `saved` fingerprint, in words; undefined when the bytes
 * are the same (names alone may differ: the same text moved is the same data) or when the
 * checkpoint recorded none.
 */
export function describeDataChange(saved: unknown, now: DataFingerprint): string | undefined {
  if (!isFingerprint(saved) || saved.sha256 === now.sha256) return undefined;
  const before = new Map(saved.files);
  const after = new Map(now.files);
  const added = [...after.keys()].filter((f) => !before.has(f));
  const removed = [...before.keys()].filter((f) => !after.has(f));
  const resized = [...after.keys()].filter((f) => before.has(f) && before.get(f) !== after.get(f));
  const some = (names: string[]): string => names.slice(0, 3).join(", ") + (names.length > 3 ? `, … (${names.length})` : "");
  const parts = [
    added.length ? `${added.length} file(s) added (${some(added)})` : "",
    removed.length ? `${removed.length} removed (${some(removed)})` : "",
    resized.length ? `${resized.length} changed size (${some(resized)})` : "",
  ].filter(Boolean);
  const files = parts.length ? parts.join(", ") : "the same files, with different contents";
  return `${files}; ${saved.bytes.toLocaleString("en-US")} bytes then, ${now.bytes.toLocaleString("en-US")} now`;
}
