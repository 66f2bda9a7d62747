/**
 * validate(): every problem of a DeepSpeed config at once. The schema (through ajv, all errors)
 * catches unknown keys, wrong types, out-of-range values and "auto" where nothing fills it in;
 * then the rules a schema cannot state: the batch-size arithmetic and the combinations DeepSpeed
 * refuses. assertValid() throws one error listing them all.
 */
import { Ajv2020, type ValidateFunction } from "./ajv.js";
import { batchSizeProblems } from "./batchSize.js";
import { formatProblems } from "./format.js";
import { type ConfigProblem, type PathSegment, formatPath, isObject } from "./problem.js";
import { crossFieldProblems } from "./rules.js";
import { deepspeedConfigSchema } from "./schema.js";
import { problemsFromSchemaErrors } from "./schemaErrors.js";
import type { DeepSpeedConfig } from "./types.js";

export interface ValidateOptions {
  /**
   * The data-parallel world size the job will run at (GPUs ÷ model-parallel degree). With it the
   * batch-size rule is checked exactly, deriving a missing value as DeepSpeed would; without it
   * only what must hold at every world size is checked.
   */
  readonly worldSize?: number;
  /**
   * Whether "auto" is acceptable where Transformers or Accelerate fill it in (default true).
   * Set false for a config handed to DeepSpeed directly, where nothing replaces "auto".
   * pipeline.stages is exempt: its "auto" is DeepSpeed's own.
   */
  readonly allowAuto?: boolean;
}

export interface ValidationResult {
  readonly valid: boolean;
  readonly problems: readonly ConfigProblem[];
}

/** A config that failed validation; `problems` holds every reason. */
export class DeepSpeedConfigError extends Error {
  override readonly name = "DeepSpeedConfigError";
  constructor(readonly problems: readonly ConfigProblem[]) {
    super(formatProblems(problems));
  }
}

// Compiling the schema takes tens of milliseconds, so it is done once, on first use.
let compiled: ValidateFunction | undefined;

function schemaValidator(): ValidateFunction {
  compiled ??= new Ajv2020({
    allErrors: true,
    // parentSchema on each error lets a message say what is allowed where the error is.
    verbose: true,
    strict: true,
    // `required` inside if/then names properties declared by the enclosing object, which strict mode would flag.
    strictRequired: false,
    allowUnionTypes: true,
  }).compile(deepspeedConfigSchema);
  return compiled;
}

export function validate(config: unknown, options: ValidateOptions = {}): ValidationResult {
  if (options.worldSize !== undefined && (!Number.isInteger(options.worldSize) || options.worldSize < 1)) {
    throw new RangeError(`worldSize must be a positive integer (the data-parallel world size), got ${String(options.worldSize)}`);
  }
  const check = schemaValidator();
  const problems: ConfigProblem[] = check(config) ? [] : problemsFromSchemaErrors(check.errors ?? [], config);

  if (isObject(config)) {
    const flagged = new Set(problems.map((problem) => problem.path));
    const batchKeysClean = ["train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"].every((key) => !flagged.has(key));
    const extra = [
      ...crossFieldProblems(config),
      ...elasticityProblems(config),
      ...(batchKeysClean && !elasticityEnabled(config) ? batchSizeProblems(config, options.worldSize) : []),
      ...(options.allowAuto === false ? autoProblems(config) : []),
    ];
    // A rule speaks with more knowledge than the generic schema sentence for the same field.
    const ruled = new Set(extra.map((problem) => problem.path));
    const kept = problems.filter((problem) => !ruled.has(problem.path));
    problems.length = 0;
    problems.push(...kept, ...extra);
  }
  return { valid: problems.length === 0, problems };
}

/** Throws a DeepSpeedConfigError listing every problem, or narrows `config` to a DeepSpeedConfig. */
export function assertValid(config: unknown, options: ValidateOptions = {}): asserts config is DeepSpeedConfig {
  const { problems } = validate(config, options);
  if (problems.length > 0) throw new DeepSpeedConfigError(problems);
}

/** validate() as a type guard. */
export function isValidConfig(config: unknown, options: ValidateOptions = {}): config is DeepSpeedConfig {
  return validate(config, options).valid;
}

function elasticityEnabled(config: Record<string, unknown>): boolean {
  return isObject(config.elasticity) && config.elasticity.enabled === true;
}

/** Elastic training computes the batch sizes itself and refuses ones given beside it (unless told to ignore them). */
function elasticityProblems(config: Record<string, unknown>): ConfigProblem[] {
  const elasticity = config.elasticity;
  if (!isObject(elasticity) || elasticity.enabled !== true || elasticity.ignore_non_elastic_batch_info === true) return [];
  return ["train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"]
    .filter((key) => key in config)
    .map((key) => ({
      code: "conflict" as const,
      path: key,
      value: config[key],
      message: `${key} is given while elasticity is enabled; DeepSpeed refuses batch sizes outside the elasticity block unless elasticity.ignore_non_elastic_batch_info is true.`,
    }));
}

/** With allowAuto false: every "auto" is a problem, since DeepSpeed alone replaces none but pipeline.stages. */
function autoProblems(config: Record<string, unknown>): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  const walk = (node: unknown, segments: PathSegment[]): void => {
    if (node === "auto") {
      const path = formatPath(segments);
      if (path !== "pipeline.stages") {
        problems.push({
          code: "auto-not-allowed",
          path,
          value: node,
          message: `${path} is "auto", which only Transformers or Accelerate fill in; DeepSpeed on its own would read the string "auto". Give the value.`,
        });
      }
    } else if (Array.isArray(node)) {
      node.forEach((item, index) => walk(item, [...segments, index]));
    } else if (isObject(node)) {
      for (const [key, value] of Object.entries(node)) walk(value, [...segments, key]);
    }
  };
  walk(config, []);
  return problems;
}
