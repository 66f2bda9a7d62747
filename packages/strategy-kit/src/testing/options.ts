/**
 * What the conformance kit is asked to do, validated once at the door (DESIGN.md decision 10): a bad
 * option fails before anything is trained or launched, naming the option, the value and what is
 * allowed, through the same parser strategies use for their own options.
 */
import type { Strategy } from "@fulgur/core";
import { z } from "zod";
import { type OptionSpec, parseStrategyOptions } from "../options";
import { PRECISION_ALIASES } from "../precision/precisions";

/** Builds the strategy under test in this process. */
export type StrategyFactory = () => Strategy | Promise<Strategy>;

/**
 * Where the ranks of a launched world find the strategy: a function cannot cross into a child
 * process, a module and an export name can. Each rank imports `module` and builds the strategy from
 * `export` with `options`.
 */
export interface StrategyModule {
  /**
   * A URL the ranks import, best a file URL made next to the caller:
   * `new URL("../dist/index.js", import.meta.url).href`. A bare package name is resolved from
   * `@fulgur/strategy-kit`'s own location. A TypeScript file is imported through tsx.
   */
  readonly module: string;
  /** The export: a function `(options) => Strategy` or a Strategy class (called with `new`). Default "default". */
  readonly export?: string;
  /** Options handed to the export; JSON, since they travel to the ranks on the command line. */
  readonly options?: Readonly<Record<string, unknown>>;
}

export type StrategySource = StrategyFactory | StrategyModule;

export interface FailureOptions {
  /** The world the failure is injected into (default: the smallest of `worldSizes` above 1). */
  readonly worldSize?: number;
  /** The optimizer step (from 0) at whose first micro-batch the last rank throws (default 2). */
  readonly step?: number;
  /** Every rank must have exited this long after the failing phase began, in ms (default 30000). */
  readonly withinMs?: number;
  /**
   * Also require every other rank to print the failing rank's error before it ends (DESIGN.md
   * decision 12, for ExceptionAware strategies). Default false: the launcher stops the other ranks
   * as soon as the failing one exits, and a rank still computing may not have heard by then.
   */
  readonly everyRankNamesIt?: boolean;
}

export interface ConformanceOptions {
  /** World sizes to train at (default [1, 2, 3]); a single-device strategy passes [1]. */
  readonly worldSizes?: readonly number[];
  /** How the ranks of worlds above 1 build the strategy; needed when `source` is a function. */
  readonly worker?: StrategyModule;
  /** Optimizer steps per world (default 5). */
  readonly steps?: number;
  /** Micro-batches per optimizer step (default 2), so accumulation and `noBackwardSync` are exercised. */
  readonly accumulate?: number;
  /** Clip gradients to this global norm (default 0.65: four of the five default steps exceed it, one does not). */
  readonly gradientClipVal?: number;
  /** The precision of every run, the single-device reference included (default "32-true"). */
  readonly precision?: string;
  /** Largest relative difference of a step's loss from the single-device loss (default 1e-5). */
  readonly tolerance?: number;
  /** Seeds the model's initial weights and the synthetic token stream (default 1234). */
  readonly seed?: number;
  /** Tokens per synthetic sequence, at most the tiny GPT's 64 (default 16: fast on CPU). */
  readonly seqLen?: number;
  /** Round-trip the module state through the strategy's checkpoint save and load (default true). */
  readonly checkpoint?: boolean;
  /** Inject a failure on the last rank of one launched world (default {}); false skips it. */
  readonly failure?: FailureOptions | false;
  /** Longest one launched world may run before its ranks are killed, in ms (default 120000). */
  readonly timeoutMs?: number;
  /** Environment of the ranks (default process.env); rank variables are always replaced by the kit's. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Receives every line the ranks print, prefixed `[rank N]` (default: dropped; shown in failures). */
  readonly log?: (line: string) => void;
}

export interface ResolvedConformanceOptions {
  readonly worldSizes: readonly number[];
  readonly worker: StrategyModule | undefined;
  readonly steps: number;
  readonly accumulate: number;
  readonly gradientClipVal: number;
  readonly precision: string;
  readonly tolerance: number;
  readonly seed: number;
  readonly seqLen: number;
  readonly checkpoint: boolean;
  /** Resolved: null when no world above 1 is trained or the caller turned it off. */
  readonly failure: Readonly<Required<FailureOptions>> | null;
  readonly timeoutMs: number;
  readonly env: Readonly<Record<string, string | undefined>> | undefined;
  readonly log: ((line: string) => void) | undefined;
}

/** A bad option of the conformance kit; `option` names it. */
export class ConformanceOptionError extends TypeError {
  override readonly name: string = "ConformanceOptionError";
  constructor(
    readonly option: string,
    message: string,
  ) {
    super(message);
  }
}

const TINY_SEQ_LEN = 64;

const strategyModuleSchema = z.strictObject({
  module: z.string().min(1),
  export: z.string().min(1).optional(),
  options: z.record(z.string(), z.unknown()).optional(),
});

const SPEC: OptionSpec<ConformanceOptions> = {
  schema: z.strictObject({
    worldSizes: z.array(z.number().int().min(1).max(8)).min(1).optional(),
    worker: strategyModuleSchema.optional(),
    steps: z.number().int().min(1).max(100).optional(),
    accumulate: z.number().int().min(1).max(16).optional(),
    gradientClipVal: z.number().positive().optional(),
    precision: z.string().min(1).optional(),
    tolerance: z.number().positive().optional(),
    seed: z.number().int().min(0).optional(),
    seqLen: z.number().int().min(2).max(TINY_SEQ_LEN).optional(),
    checkpoint: z.boolean().optional(),
    failure: z
      .union([
        z.literal(false),
        z.strictObject({
          worldSize: z.number().int().min(2).optional(),
          step: z.number().int().min(0).optional(),
          withinMs: z.number().int().positive().optional(),
          everyRankNamesIt: z.boolean().optional(),
        }),
      ])
      .optional(),
    timeoutMs: z.number().int().positive().optional(),
    // process.env is not a plain object; copy it so the record check sees its values.
    env: z
      .preprocess((v) => (v && typeof v === "object" ? { ...(v as object) } : v), z.record(z.string(), z.string().optional()))
      .optional(),
    log: z.custom<(line: string) => void>((v) => typeof v === "function").optional(),
  }),
  allowed: {
    worldSizes: "a non-empty array of integers from 1 to 8",
    worker: "{ module: string, export?: string, options?: object }",
    steps: "an integer from 1 to 100",
    accumulate: "an integer from 1 to 16",
    gradientClipVal: "a positive number",
    precision: 'a precision name such as "32-true" or "bf16-mixed"',
    tolerance: "a positive number",
    seed: "a non-negative integer",
    seqLen: `an integer from 2 to ${TINY_SEQ_LEN} (the tiny GPT's context)`,
    checkpoint: "true or false",
    failure: "false, or { worldSize?: integer >= 2, step?: integer >= 0, withinMs?: positive integer, everyRankNamesIt?: boolean }",
    timeoutMs: "a positive integer number of milliseconds",
    env: "an object of string values",
    log: "a function receiving each line the ranks print",
  },
  // worker, env and log have no default: absent means "the source", "process.env", "dropped".
  defaults: {
    worldSizes: [1, 2, 3],
    worker: undefined as unknown as StrategyModule,
    steps: 5,
    accumulate: 2,
    gradientClipVal: 0.65,
    precision: "32-true",
    tolerance: 1e-5,
    seed: 1234,
    seqLen: 16,
    checkpoint: true,
    failure: {},
    timeoutMs: 120_000,
    env: undefined as unknown as Record<string, string | undefined>,
    log: undefined as unknown as (line: string) => void,
  },
  error: (option: string, message: string) => new ConformanceOptionError(option, message),
};

export function isStrategyModule(source: unknown): source is StrategyModule {
  return typeof source === "object" && source !== null && typeof (source as StrategyModule).module === "string";
}

/** Validates `options` against what `source` can do; throws ConformanceOptionError naming the option. */
export function resolveConformanceOptions(source: StrategySource, options: ConformanceOptions = {}): ResolvedConformanceOptions {
  const o = parseStrategyOptions<ConformanceOptions>(SPEC, options, "runStrategyConformance");
  if (typeof source !== "function" && !isStrategyModule(source)) {
    throw new ConformanceOptionError(
      "source",
      "runStrategyConformance: the first argument must be a function returning the strategy, or { module, export?, options? }",
    );
  }
  if (isStrategyModule(source)) {
    const parsed = strategyModuleSchema.safeParse(source);
    if (!parsed.success) throw new ConformanceOptionError("source", `runStrategyConformance source: expected ${SPEC.allowed.worker}`);
  }
  if (!Object.hasOwn(PRECISION_ALIASES, o.precision)) {
    throw new ConformanceOptionError(
      "precision",
      `runStrategyConformance option precision: got ${JSON.stringify(o.precision)}; expected one of ${Object.keys(PRECISION_ALIASES).map((k) => JSON.stringify(k)).join(", ")}`,
    );
  }
  const worldSizes = [...new Set(o.worldSizes)].sort((a, b) => a - b);
  const worker = o.worker ?? (isStrategyModule(source) ? source : undefined);
  const multi = worldSizes.filter((w) => w > 1);
  if (multi.length > 0 && !worker) {
    throw new ConformanceOptionError(
      "worker",
      `runStrategyConformance option worker: world sizes ${multi.join(", ")} run in launched processes, which cannot receive a function; ` +
        "pass worker: { module: new URL(\"./myStrategy.js\", import.meta.url).href, export: \"createStrategy\" } (or pass that object as the source), " +
        "or worldSizes: [1] for a single-device strategy",
    );
  }
  let failure: Required<FailureOptions> | null = null;
  if (o.failure !== false && multi.length > 0) {
    const f = o.failure;
    const worldSize = f.worldSize ?? multi[0];
    if (!multi.includes(worldSize)) {
      throw new ConformanceOptionError(
        "failure",
        `runStrategyConformance option failure.worldSize: got ${worldSize}; expected one of the launched world sizes ${multi.join(", ")}`,
      );
    }
    const step = f.step ?? Math.min(2, o.steps - 1);
    if (step >= o.steps) {
      throw new ConformanceOptionError("failure", `runStrategyConformance option failure.step: got ${step}; expected a step below steps (${o.steps})`);
    }
    failure = Object.freeze({ worldSize, step, withinMs: f.withinMs ?? 30_000, everyRankNamesIt: f.everyRankNamesIt ?? false });
  }
  return Object.freeze({
    worldSizes: Object.freeze(worldSizes),
    worker,
    steps: o.steps,
    accumulate: o.accumulate,
    gradientClipVal: o.gradientClipVal,
    precision: o.precision,
    tolerance: o.tolerance,
    seed: o.seed,
    seqLen: o.seqLen,
    checkpoint: o.checkpoint,
    failure,
    timeoutMs: o.timeoutMs,
    env: o.env,
    log: o.log,
  });
}
