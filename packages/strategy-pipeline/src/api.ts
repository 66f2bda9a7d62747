/**
 * The options of the pipeline strategies, validated once at construction with the kit's option
 * parser (a bad option names the field, the value and what is allowed). Parsed options are frozen.
 */
import { PARALLEL_ALLOWED, PARALLEL_DEFAULTS, PARALLEL_SHAPE, type ParallelOptions, StrategyOptionError, parseStrategyOptions } from "@fulgur/strategy-kit";
import { z } from "zod";
import { SCHEDULE_NAMES, type ScheduleName } from "./schedules/action";

export interface PipelineOptions extends ParallelOptions {
  /** Pipeline ranks p (default: the world size, or world / 2 is never guessed for "ddp": give it). */
  readonly stages?: number | null;
  /** Where stages start: block indices, p·v − 1 of them, strictly increasing (default: from `balance`). */
  readonly splitPoints?: readonly number[] | null;
  /** How stages are cut when `splitPoints` is absent: equal numbers of blocks, or equal parameter counts. */
  readonly balance?: "blocks" | "params";
  /** Micro-batches each batch is split into, along dim 0 (default 4). */
  readonly microBatches?: number;
  readonly schedule?: ScheduleName;
  /** Stages per rank for "interleaved" (default 2; 1 for the other schedules). */
  readonly virtualStages?: number | null;
  /**
   * "ddp": replicas of the whole pipeline, each stage's gradients averaged over its replicas.
   * "fsdp": each stage fully sharded (FULL_SHARD, @fulgur/sharding) over its replicas, one unit a block.
   */
  readonly dataParallel?: "none" | "ddp" | "fsdp";
  /** The ModuleList of blocks to cut between, by qualified name (default: the list holding the most parameters). */
  readonly blocks?: string | null;
}

export type ResolvedPipelineOptions = Readonly<Required<PipelineOptions>>;

export const PIPELINE_DEFAULTS: ResolvedPipelineOptions = Object.freeze({
  ...PARALLEL_DEFAULTS,
  stages: null,
  splitPoints: null,
  balance: "blocks",
  microBatches: 4,
  schedule: "1f1b",
  virtualStages: null,
  dataParallel: "none",
  blocks: null,
});

const positive = z.number().int().positive();
const schema = z.strictObject({
  ...PARALLEL_SHAPE,
  stages: positive.nullable().optional(),
  splitPoints: z.array(positive).nullable().optional(),
  balance: z.enum(["blocks", "params"]).optional(),
  microBatches: positive.optional(),
  schedule: z.enum(SCHEDULE_NAMES as [ScheduleName, ...ScheduleName[]]).optional(),
  virtualStages: positive.nullable().optional(),
  dataParallel: z.enum(["none", "ddp", "fsdp"]).optional(),
  blocks: z.string().min(1).nullable().optional(),
});

const ALLOWED: Record<keyof PipelineOptions, string> = {
  ...PARALLEL_ALLOWED,
  stages: "a positive integer dividing the world size (default: the world size)",
  splitPoints: "an array of strictly increasing block indices where stages 1, 2, ... start, one fewer than the stages",
  balance: '"blocks" or "params"',
  microBatches: "a positive integer dividing the batch size",
  schedule: SCHEDULE_NAMES.map((n) => JSON.stringify(n)).join(", "),
  virtualStages: "a positive integer (stages per rank; interleaved only)",
  dataParallel: '"none", "ddp" or "fsdp"',
  blocks: "the qualified name of a ModuleList, e.g. \"model.blocks\"",
};

/** A bad pipeline option; `option` names it. */
export class PipelineOptionError extends StrategyOptionError {
  override readonly name = "PipelineOptionError";
}

export function parsePipelineOptions(input: unknown, strategyName = "pipeline"): ResolvedPipelineOptions {
  const o = parseStrategyOptions<PipelineOptions>(
    { schema, allowed: ALLOWED, defaults: PIPELINE_DEFAULTS as Required<PipelineOptions>, error: (f, m) => new PipelineOptionError(f, m) },
    input,
    strategyName,
  );
  const fail = (field: keyof PipelineOptions, expected: string) => {
    throw new PipelineOptionError(field, `${strategyName} option ${field}: got ${JSON.stringify(o[field])}; expected ${expected}`);
  };
  if (o.virtualStages !== null && o.virtualStages > 1 && o.schedule !== "interleaved") fail("virtualStages", `1 or null with schedule ${JSON.stringify(o.schedule)} (only "interleaved" runs several stages per rank)`);
  const sp = o.splitPoints;
  if (sp && sp.some((x, i) => i > 0 && x <= sp[i - 1])) fail("splitPoints", ALLOWED.splitPoints);
  // ZB-H1's W runs a block's weight products after later micro-batches' forwards may have resharded
  // the block; the sharded unit's per-backward gradient buffer does not follow that yet.
  if (o.dataParallel === "fsdp" && o.schedule === "zb-h1") fail("dataParallel", `"none" or "ddp" with schedule "zb-h1" (FSDP inside stages runs gpipe, 1f1b and interleaved)`);
  if (o.stages !== null && o.schedule === "interleaved" && o.microBatches % o.stages !== 0) fail("microBatches", `a multiple of stages (${o.stages}) for the interleaved schedule`);
  return Object.freeze({ ...o, splitPoints: sp ? Object.freeze([...sp]) : null });
}
