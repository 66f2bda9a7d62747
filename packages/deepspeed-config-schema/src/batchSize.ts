/**
 * The batch-size rule: train_batch_size = train_micro_batch_size_per_gpu ×
 * gradient_accumulation_steps × data-parallel world size. DeepSpeed asserts it at start-up, after
 * deriving whichever of the three is missing (runtime/config.py, _set_batch_related_parameters
 * and _batch_assertion). Its derivations divide with floor division, so a train_batch_size that
 * does not divide evenly yields a smaller derived value and then fails the assertion with numbers
 * the user never wrote (issues #17, #4703, #6914). This module derives the same way and says,
 * with every number named, why a combination cannot work.
 */
import { type ConfigProblem, isObject } from "./problem.js";

export type BatchSizeKey = "train_batch_size" | "train_micro_batch_size_per_gpu" | "gradient_accumulation_steps";

export interface BatchSizes {
  readonly train_batch_size: number;
  readonly train_micro_batch_size_per_gpu: number;
  readonly gradient_accumulation_steps: number;
}

export type BatchSizeResolution =
  | {
      readonly resolved: true;
      readonly values: BatchSizes;
      /** The keys DeepSpeed would fill in (empty when all three were given and agree). */
      readonly derived: readonly BatchSizeKey[];
      /** How the values follow, e.g. "gradient_accumulation_steps = 32 / (4 × 2) = 4". */
      readonly explanation: string;
    }
  | {
      readonly resolved: false;
      /** Why the values cannot be known or cannot work. */
      readonly reason: string;
      /** The mistakes, if any: empty when the values are merely unknown yet ("auto"). */
      readonly problems: readonly ConfigProblem[];
    };

const KEYS: readonly BatchSizeKey[] = ["train_batch_size", "train_micro_batch_size_per_gpu", "gradient_accumulation_steps"];
const TRAIN = "train_batch_size";
const MICRO = "train_micro_batch_size_per_gpu";
const STEPS = "gradient_accumulation_steps";

/**
 * Fills in the batch-size key DeepSpeed would derive for this data-parallel world size, or
 * explains why it cannot: a value that is not a positive integer, a division that does not come
 * out even, three values that disagree, or neither train_batch_size nor the micro-batch given.
 * "auto" values are left to the integration that fills them, so nothing is resolved then.
 */
export function resolveBatchSizes(config: unknown, worldSize: number): BatchSizeResolution {
  if (!Number.isInteger(worldSize) || worldSize < 1) {
    throw new RangeError(`worldSize must be a positive integer (the data-parallel world size), got ${String(worldSize)}`);
  }
  const source = isObject(config) ? config : {};
  const autos = KEYS.filter((key) => source[key] === "auto");
  if (autos.length > 0) {
    return {
      resolved: false,
      reason:
        `${autos.join(" and ")} ${autos.length === 1 ? "is" : "are"} "auto": Transformers or Accelerate fill ` +
        `${autos.length === 1 ? "it" : "them"} in from their own arguments, so the batch sizes are known only then.`,
      problems: [],
    };
  }
  const invalid = KEYS.flatMap((key): ConfigProblem[] => {
    const value = source[key];
    if (value === undefined || (Number.isInteger(value) && (value as number) >= 1)) return [];
    return [
      {
        code: "batch-size",
        path: key,
        value,
        message: `${key} is ${JSON.stringify(value)}, but it must be a positive integer.`,
        allowed: ["an integer ≥ 1"],
      },
    ];
  });
  if (invalid.length > 0) return { resolved: false, reason: invalid.map((p) => p.message).join(" "), problems: invalid };

  const train = source[TRAIN] as number | undefined;
  const micro = source[MICRO] as number | undefined;
  const steps = source[STEPS] as number | undefined;
  const world = `data-parallel world size ${worldSize}`;

  if (train !== undefined && micro !== undefined && steps !== undefined) {
    const product = micro * steps * worldSize;
    if (train === product) {
      return resolved(train, micro, steps, [], `${TRAIN} ${train} = ${MICRO} ${micro} × ${STEPS} ${steps} × ${world}`);
    }
    return fail(
      TRAIN,
      train,
      `${TRAIN} ${train} does not equal ${MICRO} ${micro} × ${STEPS} ${steps} × ${world} = ${product}; ` +
        `DeepSpeed stops at start-up with "Check batch related parameters".`,
      String(product),
    );
  }
  if (train !== undefined && micro !== undefined) return derive(train, micro, worldSize, STEPS);
  if (train !== undefined && steps !== undefined) return derive(train, steps, worldSize, MICRO);
  if (micro !== undefined && steps !== undefined) {
    const product = micro * steps * worldSize;
    return resolved(product, micro, steps, [TRAIN], `${TRAIN} = ${MICRO} ${micro} × ${STEPS} ${steps} × ${world} = ${product}`);
  }
  // With one of the two given, DeepSpeed sets the accumulation steps to 1.
  if (train !== undefined) return derive(train, 1, worldSize, MICRO, [STEPS]);
  if (micro !== undefined) {
    const product = micro * worldSize;
    return resolved(product, micro, 1, [TRAIN, STEPS], `${STEPS} = 1 and ${TRAIN} = ${MICRO} ${micro} × ${world} = ${product}`);
  }
  return fail(TRAIN, undefined, `Neither ${TRAIN} nor ${MICRO} is given; DeepSpeed needs at least one of them${steps === undefined ? "" : ` (${STEPS} alone is not enough)`}.`);
}

/**
 * Derives `missing` (the steps or the micro-batch) from train_batch_size and the other factor,
 * as DeepSpeed does: train // (factor × world), then its assertion train == micro × steps × world.
 */
function derive(
  train: number,
  factor: number,
  worldSize: number,
  missing: typeof MICRO | typeof STEPS,
  alsoDerived: readonly BatchSizeKey[] = [],
): BatchSizeResolution {
  const factorKey = missing === STEPS ? MICRO : STEPS;
  const divisor = factor * worldSize;
  const derivedValue = Math.floor(train / divisor);
  const factorText = alsoDerived.includes(factorKey) ? `${factorKey} 1 (its default)` : `${factorKey} ${factor}`;
  const divisorText = `${factorText} × data-parallel world size ${worldSize} = ${divisor}`;
  if (train % divisor !== 0 || derivedValue < 1) {
    const consequence =
      derivedValue < 1
        ? `DeepSpeed would derive ${missing} = ${train} // ${divisor} = 0 and stop.`
        : `DeepSpeed would derive ${missing} = ${train} // ${divisor} = ${derivedValue} and then stop, since ${train} ≠ ${derivedValue * divisor}.`;
    const nearest = Math.max(1, Math.round(train / divisor)) * divisor;
    return fail(TRAIN, train, `${TRAIN} ${train} is not a multiple of ${divisorText}; ${consequence}`, String(nearest));
  }
  const micro = missing === MICRO ? derivedValue : factor;
  const steps = missing === STEPS ? derivedValue : factor;
  return resolved(train, micro, steps, [...alsoDerived, missing], `${missing} = ${TRAIN} ${train} / (${divisorText}) = ${derivedValue}`);
}

function resolved(train: number, micro: number, steps: number, derived: readonly BatchSizeKey[], explanation: string): BatchSizeResolution {
  return {
    resolved: true,
    values: { train_batch_size: train, train_micro_batch_size_per_gpu: micro, gradient_accumulation_steps: steps },
    derived,
    explanation,
  };
}

function fail(path: BatchSizeKey, value: number | undefined, message: string, suggestion?: string): BatchSizeResolution {
  const problem: ConfigProblem = {
    code: "batch-size",
    path,
    message,
    ...(value === undefined ? {} : { value }),
    ...(suggestion === undefined ? {} : { suggestion }),
  };
  return { resolved: false, reason: message, problems: [problem] };
}

/**
 * The batch-size problems of a config: with a world size, whatever resolveBatchSizes finds;
 * without one, whether the given values can work at any world size at all (train_batch_size
 * must be a multiple of the micro-batch × accumulation steps).
 */
export function batchSizeProblems(config: Record<string, unknown>, worldSize: number | undefined): ConfigProblem[] {
  if (worldSize !== undefined) {
    const resolution = resolveBatchSizes(config, worldSize);
    return resolution.resolved ? [] : [...resolution.problems];
  }
  const train = config[TRAIN];
  const micro = config[MICRO];
  const steps = config[STEPS];
  if (!isPositiveInteger(train)) return [];
  const factors: [string, number][] = [];
  if (isPositiveInteger(micro)) factors.push([MICRO, micro]);
  if (isPositiveInteger(steps)) factors.push([STEPS, steps]);
  if (factors.length === 0) return [];
  const divisor = factors.reduce((product, [, value]) => product * value, 1);
  if (train % divisor === 0) return [];
  const named = factors.map(([key, value]) => `${key} ${value}`).join(" × ");
  return [
    {
      code: "batch-size",
      path: TRAIN,
      value: train,
      message:
        `${TRAIN} ${train} is not a multiple of ${named}${factors.length > 1 ? ` = ${divisor}` : ""}, ` +
        `so no data-parallel world size satisfies ${TRAIN} = ${MICRO} × ${STEPS} × world size.`,
    },
  ];
}

function isPositiveInteger(value: unknown): value is number {
  return Number.isInteger(value) && (value as number) >= 1;
}
