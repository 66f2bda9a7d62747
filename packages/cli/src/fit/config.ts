/**
 * The `fulgur fit` config file: loaded from YAML or JSON, overridden by `--set key=value`, then
 * checked against the JSON Schema in src/schemas/fitConfig.schema.json and against what the
 * schema cannot say (paths exist, dModel divisible by nHeads, Trainer options as the Trainer
 * parses them). Every problem is reported at once, each naming the field, the value and what is
 * allowed, before any data is read or any step is trained (DESIGN.md, decision 10).
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, extname, resolve } from "node:path";
import AjvModule, { type ErrorObject } from "ajv";
import { InvalidArgumentError } from "commander";
import { parse as parseYaml } from "yaml";
import { type GPTConfig, resolveGPTConfig } from "@fulgur/nn";
import { type TrainerOptionsInput, parseTrainerOptions } from "@fulgur/trainer";
import { UsageError, showValue } from "../errors";
import schema from "../schemas/fitConfig.schema.json";

export interface FitModelConfig {
  readonly config: Required<GPTConfig>;
  readonly lr?: number;
  readonly weightDecay?: number;
  readonly betas?: [number, number];
  readonly warmupSteps?: number;
  readonly totalSteps?: number;
  readonly minLrRatio?: number;
  readonly seed?: number;
}

export interface FitDataConfig {
  /** Absolute paths. */
  readonly paths: string[];
  readonly seqLen: number;
  readonly batchSize: number;
  readonly shuffle: boolean;
  readonly valFraction: number;
}

/** A config that passed every check, with defaults filled in and paths made absolute. */
export interface FitConfig {
  readonly model: FitModelConfig;
  readonly data: FitDataConfig;
  readonly trainer: TrainerOptionsInput;
  readonly ckptPath?: string;
}

export interface Override {
  readonly key: string;
  readonly value: unknown;
}

/** The whole list of what is wrong with a config file; exits with 2 like any usage error. */
export class ConfigError extends UsageError {
  constructor(
    readonly file: string,
    readonly problems: readonly string[],
  ) {
    super(`${file}: ${problems.length} problem${problems.length === 1 ? "" : "s"} in the config:\n  - ${problems.join("\n  - ")}`);
  }
}

// ---- loading -------------------------------------------------------------------------------------

const CONFIG_FLAG = "--config <file>";

export function loadConfigFile(path: string): unknown {
  const ext = extname(path).toLowerCase();
  if (![".yaml", ".yml", ".json"].includes(ext)) {
    throw new UsageError(`option '${CONFIG_FLAG}' argument '${path}' is invalid. expected a .yaml, .yml or .json file`);
  }
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code === "ENOENT" ? `${resolve(path)} does not exist` : (err as Error).message;
    throw new UsageError(`option '${CONFIG_FLAG}' argument '${path}' is invalid. expected a readable config file (${why})`);
  }
  try {
    return ext === ".json" ? JSON.parse(text) : parseYaml(text);
  } catch (err) {
    throw new UsageError(`${path}: not valid ${ext === ".json" ? "JSON" : "YAML"}: ${(err as Error).message.split("\n")[0]}`);
  }
}

// ---- --set ---------------------------------------------------------------------------------------

const KEY = /^[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*$/;

/** `--set` values: numbers, booleans and null are typed; `[...]`/`{...}` are JSON; anything else is a string. */
export function parseOverrideValue(text: string): unknown {
  const t = text.trim();
  if (t === "true") return true;
  if (t === "false") return false;
  if (t === "null") return null;
  if (t !== "" && /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(t)) return Number(t);
  if (/^[[{]/.test(t)) {
    try {
      return JSON.parse(t);
    } catch {
      // Not JSON after all: keep the text, and let the schema say what the field accepts.
    }
  }
  return text;
}

/** The argParser of `--set`: `a.b.c=value`. */
export function parseOverride(text: string): Override {
  const eq = text.indexOf("=");
  const key = eq < 0 ? "" : text.slice(0, eq).trim();
  if (eq < 0 || !KEY.test(key)) {
    throw new InvalidArgumentError("expected key=value with a dotted key, e.g. trainer.maxSteps=10 or model.lr=1e-3");
  }
  return { key, value: parseOverrideValue(text.slice(eq + 1)) };
}

/** Applies overrides to a copy of the loaded config, creating objects on the way. */
export function applyOverrides(config: unknown, overrides: readonly Override[]): unknown {
  if (overrides.length === 0) return config;
  const root = structuredClone(config ?? {}) as Record<string, unknown>;
  if (typeof root !== "object" || Array.isArray(root)) return root;
  for (const { key, value } of overrides) {
    const parts = key.split(".");
    let node: Record<string, unknown> = root;
    parts.slice(0, -1).forEach((part, i) => {
      const next = node[part];
      if (next === undefined || next === null) node[part] = {};
      else if (typeof next !== "object" || Array.isArray(next)) {
        const at = parts.slice(0, i + 1).join(".");
        throw new UsageError(`option '--set <key=value>' argument '${key}=...' is invalid. ${at} is ${showValue(next)}, not an object, so it has no field ${parts[i + 1]}`);
      }
      node = node[part] as Record<string, unknown>;
    });
    node[parts[parts.length - 1]] = value;
  }
  return root;
}

// ---- validation ----------------------------------------------------------------------------------

const Ajv = ((AjvModule as unknown as { default?: typeof AjvModule }).default ?? AjvModule) as typeof AjvModule;
type Validator = ReturnType<InstanceType<typeof AjvModule>["compile"]>;
let compiled: Validator | undefined;

/** Compiled on first use, so commands other than fit never pay for it. */
function validateSchema(data: unknown): Validator {
  compiled ??= new Ajv({ allErrors: true, verbose: true, strict: true, allowUnionTypes: true }).compile(schema);
  compiled(data);
  return compiled;
}

type Segment = string | number;

function pointerSegments(pointer: string): string[] {
  return pointer === "" ? [] : pointer.slice(1).split("/").map((s) => s.replace(/~1/g, "/").replace(/~0/g, "~"));
}

function valueAt(data: unknown, segments: readonly Segment[]): unknown {
  let v = data;
  for (const s of segments) v = v !== null && typeof v === "object" ? (v as Record<string, unknown>)[s] : undefined;
  return v;
}

/** `data.paths[0]`-style names, with array indices where the data has arrays. */
function fieldName(data: unknown, segments: readonly Segment[]): string {
  let out = "";
  let v = data;
  for (const s of segments) {
    out += Array.isArray(v) ? `[${s}]` : out ? `.${s}` : String(s);
    v = v !== null && typeof v === "object" ? (v as Record<string, unknown>)[s] : undefined;
  }
  return out || "(the top level)";
}

interface SchemaNode {
  description?: string;
  properties?: Record<string, SchemaNode>;
}

function describeSchemaError(error: ErrorObject, data: unknown): { field: string; text: string } | null {
  const segments = pointerSegments(error.instancePath);
  const parent = error.parentSchema as SchemaNode | undefined;
  switch (error.keyword) {
    case "if":
      return null; // the failing branch (then/else) reports the real problem
    case "required": {
      const missing = (error.params as { missingProperty: string }).missingProperty;
      const field = fieldName(data, [...segments, missing]);
      const allowed = parent?.properties?.[missing]?.description ?? "a value";
      return { field, text: `${field}: missing; expected ${allowed}` };
    }
    case "additionalProperties": {
      const extra = (error.params as { additionalProperty: string }).additionalProperty;
      const field = fieldName(data, [...segments, extra]);
      const allowedKeys = Object.keys(parent?.properties ?? {}).filter((k) => k !== "$schema");
      const where = segments.length ? fieldName(data, segments) : "the top level";
      return { field, text: `${field}: unknown key (value ${showValue(valueAt(data, [...segments, extra]))}); ${where} allows ${allowedKeys.join(", ")}` };
    }
    default: {
      const field = fieldName(data, segments);
      const allowed = parent?.description ?? error.message ?? "a valid value";
      return { field, text: `${field}: got ${showValue(valueAt(data, segments))}; expected ${allowed}` };
    }
  }
}

function schemaProblems(data: unknown): string[] {
  const validator = validateSchema(data);
  if (!validator.errors?.length) return [];
  const seen = new Set<string>();
  const out: string[] = [];
  for (const error of validator.errors) {
    const d = describeSchemaError(error, data);
    if (!d || seen.has(d.field)) continue;
    seen.add(d.field);
    out.push(d.text);
  }
  return out;
}

/** Trainer option problems, as parseTrainerOptions words them, renamed to config fields. */
function trainerProblems(trainer: Record<string, unknown>): string[] {
  try {
    parseTrainerOptions(trainer);
    return [];
  } catch (err) {
    const lines = (err as Error).message.split("\n").slice(1).map((l) => l.replace(/^\s*-\s*/, ""));
    return lines.map((l) => {
      const m = /^option "([^"]+)": (.*)$/.exec(l);
      // zod's own words for a type mismatch ("Invalid input: expected number, received string") read better shortened.
      const text = m ? m[2].replace(/Invalid input: expected (\w+), received \w+$/, "expected a $1") : l;
      return m ? `trainer.${m[1]}: ${text}` : `trainer: ${text}`;
    });
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/**
 * Checks a loaded config (after overrides). `baseDir` anchors relative paths: the config file's
 * directory. Returns the resolved config or throws a ConfigError listing every problem.
 */
export function validateFitConfig(raw: unknown, file: string, baseDir = dirname(resolve(file))): FitConfig {
  const problems = schemaProblems(raw);
  const cfg = (isObject(raw) ? raw : {}) as Record<string, unknown>;
  const model = isObject(cfg.model) ? cfg.model : {};
  const data = isObject(cfg.data) ? cfg.data : {};
  const failed = (field: string) => problems.some((p) => p.startsWith(`${field}:`) || p.startsWith(`${field}.`) || p.startsWith(`${field}[`));

  // The checks below only look at fields the schema accepted, so one mistake is reported once.
  let gpt: Required<GPTConfig> | undefined;
  if (model.config !== undefined && !failed("model.config")) {
    try {
      // Byte-level data: a config object may leave the vocabulary out.
      const c = typeof model.config === "string" ? model.config : { vocabSize: 256, ...(model.config as object) };
      gpt = resolveGPTConfig(c as GPTConfig);
    } catch (err) {
      problems.push(`model.config: got ${showValue(model.config)}; ${(err as Error).message.replace(/^GPT config: /, "")}`);
    }
  }
  if (gpt && typeof data.seqLen === "number" && !failed("data.seqLen") && data.seqLen > gpt.seqLen) {
    problems.push(`data.seqLen: got ${data.seqLen}; expected at most the model's seqLen (${gpt.seqLen})`);
  }
  if (typeof model.warmupSteps === "number" && typeof model.totalSteps === "number" && model.warmupSteps > model.totalSteps) {
    problems.push(`model.warmupSteps: got ${model.warmupSteps}; expected at most model.totalSteps (${model.totalSteps})`);
  }
  const paths: string[] = [];
  if (Array.isArray(data.paths)) {
    data.paths.forEach((p, i) => {
      if (typeof p !== "string" || p === "") return; // the schema has reported it
      const abs = resolve(baseDir, p);
      if (!existsSync(abs)) problems.push(`data.paths[${i}]: got ${showValue(p)}; expected an existing file or directory (${abs} does not exist)`);
      paths.push(abs);
    });
  }
  let ckptPath: string | undefined;
  if (typeof cfg.ckptPath === "string" && !failed("ckptPath")) {
    ckptPath = resolve(baseDir, cfg.ckptPath);
    if (!existsSync(ckptPath)) problems.push(`ckptPath: got ${showValue(cfg.ckptPath)}; expected an existing checkpoint file (${ckptPath} does not exist)`);
  }
  let trainer: Record<string, unknown> = {};
  if (isObject(cfg.trainer)) {
    // Values the schema refused are reported already; the Trainer checks the rest.
    trainer = Object.fromEntries(Object.entries(cfg.trainer).filter(([k]) => !failed(`trainer.${k}`)));
    if (typeof trainer.defaultRootDir === "string") trainer.defaultRootDir = resolve(baseDir, trainer.defaultRootDir);
    problems.push(...trainerProblems(trainer));
  }
  if (problems.length > 0) throw new ConfigError(file, problems);

  const seqLen = (data.seqLen as number | undefined) ?? gpt!.seqLen;
  return {
    model: {
      config: gpt!,
      lr: model.lr as number | undefined,
      weightDecay: model.weightDecay as number | undefined,
      betas: model.betas as [number, number] | undefined,
      warmupSteps: model.warmupSteps as number | undefined,
      totalSteps: model.totalSteps as number | undefined,
      minLrRatio: model.minLrRatio as number | undefined,
      seed: model.seed as number | undefined,
    },
    data: {
      paths,
      seqLen,
      batchSize: data.batchSize as number,
      shuffle: (data.shuffle as boolean | undefined) ?? true,
      valFraction: (data.valFraction as number | undefined) ?? 0,
    },
    trainer: trainer as TrainerOptionsInput,
    ckptPath,
  };
}
