/**
 * Checking index.json, and each rank file's description of itself (the same shape, one file's
 * pieces), before a single tensor byte is trusted. A reader at another world size computes byte
 * positions from these numbers, so a piece out of range, two pieces claiming the same elements or a
 * hole in a tensor would silently read the wrong bytes; each is refused here with a
 * CheckpointFormatError naming the tensor, the piece and what is wrong. File names are checked to
 * be plain names inside the checkpoint directory: an index never makes a reader open a path
 * elsewhere.
 */
import { CheckpointFormatError, type CheckpointFormatProblem } from "../errors";
import {
  SAFETENSORS_DTYPES,
  hasOwn,
  isSafetensorsDType,
  safetensorsItemsize,
  setOwn,
  type TensorHeaderEntry,
} from "../safetensors/format";
import {
  RANK_DESCRIPTION_KEY,
  RANK_FILE_FORMAT,
  SHARDED_FORMAT,
  SHARDED_FORMAT_VERSION,
  numelOf,
  type PieceEntry,
  type RankDescription,
  type ShardedIndex,
  type ShardedTensorEntry,
} from "./format";

type Fail = (problem: CheckpointFormatProblem, detail: string) => never;

function failIn(path: string): Fail {
  return (problem, detail) => {
    throw new CheckpointFormatError(path, problem, detail);
  };
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isSize(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

const show = (v: unknown): string => (v === undefined ? "missing" : JSON.stringify(v));

function versionProblem(found: unknown): string {
  return (
    `${SHARDED_FORMAT} version ${found === undefined ? "is missing" : JSON.stringify(found)}; this reader knows only version ${SHARDED_FORMAT_VERSION}` +
    (found !== undefined ? " (written by a newer Fulgur? upgrade @fulgur/checkpoint-io)" : "")
  );
}

/** Parses and validates the text of index.json. */
export function parseShardedIndex(text: string, path: string): ShardedIndex {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new CheckpointFormatError(path, "header", `is not valid JSON: ${(e as Error).message}`);
  }
  return validateIndex(json, path);
}

/** Validates a parsed index; `path` names it in errors. Returns it with every tensor's pieces sorted by start. */
export function validateIndex(json: unknown, path: string): ShardedIndex {
  const fail: Fail = failIn(path);
  if (!isPlainObject(json)) return fail("header", `must be a JSON object, is ${JSON.stringify(json)}`);
  const { format, version, world_size: world } = json;
  if (format !== SHARDED_FORMAT) {
    fail("format", format === undefined ? `has no "format"; expected ${JSON.stringify(SHARDED_FORMAT)}` : `is of format ${JSON.stringify(format)}, not ${JSON.stringify(SHARDED_FORMAT)}`);
  }
  if (version !== SHARDED_FORMAT_VERSION) fail("format", versionProblem(version));
  if (!isSize(world) || world < 1) fail("header", `world_size must be a positive integer, is ${show(world)}`);
  const files = validateFiles(json.files, world as number, fail);
  const tensors = validateTensors(json.tensors, new Set(files), true, fail);
  if (!isPlainObject(json.meta)) fail("metadata", `meta must be a JSON object, is ${show(json.meta)}`);
  return { format: SHARDED_FORMAT, version: SHARDED_FORMAT_VERSION, world_size: world as number, files, tensors, meta: json.meta as ShardedIndex["meta"] };
}

/** A plain file name: no directory part, not hidden, not "." or "..", a .safetensors file. */
function isPlainFileName(name: unknown): name is string {
  return typeof name === "string" && name.endsWith(".safetensors") && !name.startsWith(".") && !/[/\\\0]/.test(name);
}

function validateFiles(value: unknown, world: number, fail: Fail): string[] {
  if (!Array.isArray(value) || value.length !== world) {
    return fail("header", `files must list one file per rank (${world}), is ${Array.isArray(value) ? `${value.length} entries` : show(value)}`);
  }
  const seen = new Set<string>();
  value.forEach((f, rank) => {
    if (!isPlainFileName(f)) fail("header", `files[${rank}] must be a plain .safetensors file name inside the checkpoint directory, is ${JSON.stringify(f)}`);
    if (seen.has(f)) fail("header", `files[${rank}] ${JSON.stringify(f)} appears twice`);
    seen.add(f);
  });
  return [...value];
}

function validatePiece(p: unknown, i: number, label: string, numel: number, files: ReadonlySet<string>, fail: Fail): PieceEntry {
  const at = `${label}: piece ${i}`;
  if (!isPlainObject(p)) return fail("header", `${at} must be an object { file, key, start, end }, is ${JSON.stringify(p)}`);
  const { file, key, start, end } = p;
  if (typeof file !== "string" || !files.has(file)) fail("header", `${at}: file ${show(file)} is not one of the checkpoint's files`);
  if (typeof key !== "string" || key === "") fail("header", `${at}: key must be a non-empty string, is ${show(key)}`);
  if (!isSize(start) || !isSize(end)) fail("offsets", `${at}: start and end must be non-negative integers, are ${show(start)} and ${show(end)}`);
  const [s, e] = [start as number, end as number];
  if (s >= e) fail("offsets", `${at}: [${s}, ${e}) is empty or reversed`);
  if (e > numel) fail("offsets", `${at}: [${s}, ${e}) runs past the tensor's ${numel} elements`);
  return { file: file as string, key: key as string, start: s, end: e };
}

/**
 * Validates a map of tensor entries. `coverage`: every non-partial tensor's pieces must cover it
 * (off for one rank's description, which holds only that rank's pieces).
 */
function validateTensors(value: unknown, files: ReadonlySet<string>, coverage: boolean, fail: Fail): Record<string, ShardedTensorEntry> {
  if (!isPlainObject(value)) return fail("header", `tensors must be an object of tensors by name, is ${show(value)}`);
  const out: Record<string, ShardedTensorEntry> = {};
  // Two pieces reading the same stored tensor would alias; the writer never does that.
  const storedBy = new Map<string, string>();
  for (const [name, entry] of Object.entries(value)) {
    const label = `tensor ${JSON.stringify(name)}`;
    if (!isPlainObject(entry)) fail("header", `${label}: entry must be an object { dtype, shape, pieces }, is ${JSON.stringify(entry)}`);
    const { dtype, shape, partial, pieces } = entry as Record<string, unknown>;
    if (!isSafetensorsDType(dtype)) return fail("dtype", `${label}: unknown dtype ${show(dtype)}; known: ${SAFETENSORS_DTYPES.join(", ")}`);
    if (!Array.isArray(shape) || !shape.every(isSize)) return fail("shape", `${label}: shape must be an array of non-negative integers, is ${show(shape)}`);
    const numel = numelOf(shape);
    if (!Number.isSafeInteger(numel * safetensorsItemsize(dtype))) fail("shape", `${label}: shape [${shape.join(", ")}] is too large to address`);
    if (partial !== undefined && typeof partial !== "boolean") fail("header", `${label}: partial must be true or false, is ${JSON.stringify(partial)}`);
    if (!Array.isArray(pieces)) return fail("header", `${label}: pieces must be an array, is ${show(pieces)}`);
    const checked = pieces.map((p, i) => validatePiece(p, i, label, numel, files, fail)).sort((a, b) => a.start - b.start);
    let covered = 0;
    let prev: PieceEntry | undefined;
    const isPartial = partial === true;
    const hole = (from: number, to: number): never =>
      fail("offsets", `${label}: elements [${from}, ${to}) of ${numel} are in no piece (a writer that means to leave them out declares the tensor partial)`);
    for (const p of checked) {
      if (prev && p.start < prev.end) {
        fail("offsets", `${label}: piece [${p.start}, ${p.end}) in ${p.file} overlaps piece [${prev.start}, ${prev.end}) in ${prev.file}`);
      }
      if (coverage && !isPartial && p.start > covered) hole(covered, p.start);
      const where = `${p.file}\0${p.key}`;
      const other = storedBy.get(where);
      if (other !== undefined) fail("offsets", `${label}: piece [${p.start}, ${p.end}) is key ${JSON.stringify(p.key)} of ${p.file}, which a piece of tensor ${JSON.stringify(other)} already uses`);
      storedBy.set(where, name);
      covered = p.end;
      prev = p;
    }
    if (coverage && !isPartial && covered < numel) hole(covered, numel);
    setOwn(out, name, { dtype, shape: [...shape], ...(isPartial ? { partial: true } : {}), pieces: checked });
  }
  return out;
}

/**
 * Checks one piece against the header of the file that stores it: the key is there, with the
 * tensor's dtype and exactly end - start elements (any shape: whole pieces keep the tensor's).
 */
export function checkPieceInFile(name: string, tensor: ShardedTensorEntry, piece: PieceEntry, entry: TensorHeaderEntry | undefined, filePath: string): TensorHeaderEntry {
  const fail: Fail = failIn(filePath);
  const what = `piece [${piece.start}, ${piece.end}) of tensor ${JSON.stringify(name)}`;
  if (!entry) return fail("header", `has no tensor ${JSON.stringify(piece.key)}, where the index puts ${what}`);
  if (entry.dtype !== tensor.dtype) fail("dtype", `tensor ${JSON.stringify(piece.key)} is ${entry.dtype}, but the index says ${what} is ${tensor.dtype}`);
  const n = numelOf(entry.shape);
  if (n !== piece.end - piece.start) fail("shape", `tensor ${JSON.stringify(piece.key)} holds ${n} elements, but ${what} needs ${piece.end - piece.start}`);
  return entry;
}

/**
 * What a rank file says it holds (its `__metadata__`), validated: the right format and version,
 * the rank and world size expected of that file, and pieces that stay inside it.
 */
export function decodeRankDescription(
  metadata: Readonly<Record<string, string>>,
  path: string,
  expected: { readonly rank: number; readonly worldSize: number; readonly file: string },
): RankDescription {
  const fail: Fail = failIn(path);
  const format = hasOwn(metadata, "format") ? metadata.format : undefined;
  if (format !== RANK_FILE_FORMAT) fail("format", `is not a rank file of a sharded checkpoint: its __metadata__ format is ${show(format)}, expected ${JSON.stringify(RANK_FILE_FORMAT)}`);
  const version = hasOwn(metadata, "format_version") ? metadata.format_version : undefined;
  if (version !== String(SHARDED_FORMAT_VERSION)) fail("format", versionProblem(version));
  let json: unknown;
  try {
    json = JSON.parse(hasOwn(metadata, RANK_DESCRIPTION_KEY) ? metadata[RANK_DESCRIPTION_KEY] : "");
  } catch (e) {
    return fail("metadata", `__metadata__[${JSON.stringify(RANK_DESCRIPTION_KEY)}] is not valid JSON: ${(e as Error).message}`);
  }
  if (!isPlainObject(json)) return fail("metadata", `__metadata__[${JSON.stringify(RANK_DESCRIPTION_KEY)}] must hold a JSON object`);
  if (json.rank !== expected.rank || json.world_size !== expected.worldSize) {
    fail("header", `says it is rank ${show(json.rank)} of ${show(json.world_size)}, but stands where rank ${expected.rank} of ${expected.worldSize} belongs`);
  }
  const tensors = validateTensors(json.tensors, new Set([expected.file]), false, fail);
  return { rank: expected.rank, world_size: expected.worldSize, tensors };
}
