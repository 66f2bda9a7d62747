/**
 * What validate() reports: one record per thing wrong, each naming the field by its dotted path
 * (`zero_optimization.offload_param.device`), the value given and what is allowed, so a config
 * fails at the door with every mistake listed at once rather than one per launch.
 */

/** What kind of mistake a problem is, for programs that filter or count them. */
export type ProblemCode =
  /** A key DeepSpeed does not know at that level (a typo, or a key in the wrong block). */
  | "unknown-key"
  /** A key that must be given is absent. */
  | "missing-key"
  /** A value of the wrong type, out of range, or not among the allowed ones. */
  | "invalid-value"
  /** "auto" where no integration fills it in (or anywhere, with `allowAuto: false`). */
  | "auto-not-allowed"
  /** train_batch_size ≠ micro-batch × accumulation steps × world size, or not derivable. */
  | "batch-size"
  /** Settings that DeepSpeed refuses in combination. */
  | "conflict";

export interface ConfigProblem {
  readonly code: ProblemCode;
  /** Dotted path of the field (`optimizer.params.betas[1]`); "" for the config itself. */
  readonly path: string;
  /** A sentence naming the field, the value given and what is allowed. */
  readonly message: string;
  /** The value found at `path`, when there is one. */
  readonly value?: unknown;
  /** What would be accepted there: alternatives in words, allowed values, or the keys known at that level. */
  readonly allowed?: readonly string[];
  /** What to write instead: a full key path for a misplaced or misspelled key, a value for a misspelled or inconsistent one. */
  readonly suggestion?: string;
}

export type PathSegment = string | number;

const IDENTIFIER = /^[A-Za-z_$][\w$-]*$/;

/** `["optimizer", "params", "betas", 1]` → `optimizer.params.betas[1]`; odd keys are quoted. */
export function formatPath(segments: readonly PathSegment[]): string {
  let path = "";
  for (const segment of segments) {
    if (typeof segment === "number") path += `[${segment}]`;
    else if (IDENTIFIER.test(segment)) path += path === "" ? segment : `.${segment}`;
    else path += `[${JSON.stringify(segment)}]`;
  }
  return path;
}

/**
 * Turns an ajv instancePath (a JSON pointer) into segments. Whether a segment is an array index
 * cannot be told from the pointer ("0" may be a key), so the config itself is walked.
 */
export function segmentsOf(pointer: string, root: unknown): PathSegment[] {
  if (pointer === "") return [];
  const segments: PathSegment[] = [];
  let node: unknown = root;
  for (const raw of pointer.slice(1).split("/")) {
    const key = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    if (Array.isArray(node)) {
      segments.push(Number(key));
      node = node[Number(key)];
    } else {
      segments.push(key);
      node = isObject(node) ? node[key] : undefined;
    }
  }
  return segments;
}

/** The value at `segments` in `root`, or undefined. */
export function valueAt(root: unknown, segments: readonly PathSegment[]): unknown {
  let node: unknown = root;
  for (const segment of segments) {
    if (Array.isArray(node) && typeof segment === "number") node = node[segment];
    else if (isObject(node) && typeof segment === "string") node = node[segment];
    else return undefined;
  }
  return node;
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** How a path reads at the start of a sentence. */
export function subjectOf(path: string): string {
  return path === "" ? "The config" : path;
}
