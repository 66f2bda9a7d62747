/**
 * Trainer options, validated once at construction (DESIGN.md, decision 10): a bad option names the
 * field, the value and what is allowed, before any process is launched or file written.
 */
import { z } from "zod";
import { PRECISION_ALIASES } from "@fulgur/strategy-kit";
import type { Callback } from "./callbacks/callback";
import type { Logger } from "./loggers/logger";

const positiveInt = z.number().int().positive();
const plugin = z.custom<object>((v) => typeof v === "object" && v !== null, { message: "must be an object" });

export const trainerOptionsSchema = z
  .object({
    accelerator: z.union([z.enum(["auto", "cpu", "cuda", "gpu"]), plugin]).default("auto"),
    devices: z.union([positiveInt, z.literal("auto")]).default("auto"),
    numNodes: positiveInt.default(1),
    strategy: z.union([z.string().min(1), plugin]).default("auto"),
    /** Options passed to the strategy's factory when `strategy` is a name. */
    strategyOptions: z.record(z.string(), z.unknown()).default({}),
    precision: z
      .union([
        z
          .union([z.string(), z.number()])
          .transform((v) => String(v))
          .refine((v) => v in PRECISION_ALIASES, { message: `must be one of ${Object.keys(PRECISION_ALIASES).join(", ")}` }),
        plugin,
      ])
      .default("32-true"),
    /** Precision, CheckpointIO and ClusterEnvironment objects, recognised by shape (as Lightning's `plugins`). */
    plugins: z.array(plugin).default([]),
    // 0 would run the loop for no step and report a loss of NaN: refused, not a silent no-op.
    maxSteps: z
      .number()
      .int()
      .min(-1)
      .refine((v) => v !== 0, { message: "expected -1 (no limit) or a positive integer (the optimizer steps to take); 0 would train no step" })
      .default(-1),
    maxEpochs: z.number().int().min(-1).optional(),
    minSteps: z.number().int().min(0).default(0),
    accumulateGradBatches: positiveInt.default(1),
    gradientClipVal: z.number().positive().optional(),
    gradientClipAlgorithm: z.enum(["norm", "value"]).default("norm"),
    valCheckInterval: z.number().positive().default(1.0),
    checkValEveryNEpoch: positiveInt.default(1),
    limitValBatches: z.number().positive().optional(),
    limitTrainBatches: z.number().positive().optional(),
    numSanityValSteps: z.number().int().min(0).default(0),
    logEveryNSteps: positiveInt.default(50),
    callbacks: z.array(plugin).default([]),
    logger: z.union([z.boolean(), plugin, z.array(plugin)]).default(true),
    defaultRootDir: z.string().min(1).default("."),
    enableProgressBar: z.boolean().default(true),
    enableCheckpointing: z.boolean().default(true),
    seed: z.number().int().min(0).optional(),
    /** Read every step's loss and check every gradient after backward; stop naming the step and the first non-finite gradient (slower: a sync per step). */
    detectAnomaly: z.boolean().default(false),
    /**
     * The machine the memory plan checks against, when it is not this one (or this one has no GPU):
     * GPU memory per device and host memory per node, as "80GiB" or bytes. With it, or on a GPU,
     * `fit` plans before launching and `strategy: "auto"` picks from the plan.
     */
    machine: z
      .object({
        gpuMemory: z.union([z.string(), z.number().positive()]).optional(),
        hostMemory: z.union([z.string(), z.number().positive()]).optional(),
        diskSpace: z.union([z.string(), z.number().positive()]).optional(),
      })
      .strict()
      .optional(),
    /** Launch even when the memory plan says the strategy does not fit (it may still run out of memory). */
    ignoreMemoryPlan: z.boolean().default(false),
    /** Stop with a message naming the step when a logged loss is NaN or infinite (checked where losses are read). */
    stopOnNonFiniteLoss: z.boolean().default(true),
  })
  .strict();

export type TrainerOptionsInput = z.input<typeof trainerOptionsSchema> & {
  callbacks?: Callback[];
  logger?: boolean | Logger | Logger[];
};
export type TrainerOptions = z.output<typeof trainerOptionsSchema>;

function describeValue(v: unknown): string {
  if (typeof v === "function") return "a function";
  try {
    const s = JSON.stringify(v);
    return s === undefined ? String(v) : s.length > 80 ? s.slice(0, 77) + "..." : s;
  } catch {
    return String(v);
  }
}

/** Parses Trainer options; throws one error listing every bad field with its value and what is allowed. */
export function parseTrainerOptions(input: unknown): TrainerOptions {
  const result = trainerOptionsSchema.safeParse(input ?? {});
  if (result.success) return result.data;
  const raw = (input ?? {}) as Record<string, unknown>;
  const lines = result.error.issues.map((issue) => {
    if (issue.code === "unrecognized_keys") {
      return `unknown option(s) ${issue.keys.map((k) => `"${k}"`).join(", ")}; allowed: ${Object.keys(trainerOptionsSchema.shape).join(", ")}`;
    }
    const field = issue.path.join(".");
    const value = issue.path.reduce<unknown>((v, k) => (v as Record<PropertyKey, unknown> | undefined)?.[k as PropertyKey], raw);
    return `option "${field}": got ${describeValue(value)}; ${allowedText(issue)}`;
  });
  throw new TypeError(`Invalid Trainer options:\n  - ${lines.join("\n  - ")}`);
}

/** What a field accepts, for fields whose schema is a union (zod's own text names the union's parts). */
const ALLOWED: Record<string, string> = {
  accelerator: 'expected "auto", "cpu", "cuda", "gpu" or an Accelerator object',
  devices: 'expected a positive integer or "auto"',
  strategy: "expected a registered strategy name or a Strategy object",
  logger: "expected true, false, a Logger or an array of Loggers",
  precision: `expected one of ${Object.keys(PRECISION_ALIASES).join(", ")} or a Precision object`,
};

function allowedText(issue: z.core.$ZodIssue): string {
  const field = String(issue.path[0] ?? "");
  if (issue.code === "invalid_union" && ALLOWED[field]) return ALLOWED[field];
  switch (issue.code) {
    case "invalid_value":
      return `expected one of ${issue.values.map((v) => JSON.stringify(v)).join(", ")}`;
    case "too_small":
      return `expected a value ${issue.inclusive ? ">=" : ">"} ${String(issue.minimum)}`;
    case "too_big":
      return `expected a value ${issue.inclusive ? "<=" : "<"} ${String(issue.maximum)}`;
    case "invalid_union": {
      const inner = issue.errors.flat().map((e) => e.message);
      return `expected ${[...new Set(inner)].join(" or ")}`;
    }
    default:
      return issue.message;
  }
}
