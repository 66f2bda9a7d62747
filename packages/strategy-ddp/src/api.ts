/**
 * The options of the DDP strategies, validated once at construction (DESIGN.md decision 10) with
 * the kit's option parser: a bad option fails before any process is launched, naming the option,
 * the value given and what is allowed. The options every multi-process strategy shares (timeout,
 * start method, kill grace, process-group backend) come from the kit.
 */
import { PARALLEL_ALLOWED, PARALLEL_DEFAULTS, PARALLEL_SHAPE, type ParallelOptions, StrategyOptionError, parseStrategyOptions } from "@fulgur/strategy-kit";
import { z } from "zod";

export type { StartMethod } from "@fulgur/strategy-kit";

export interface DDPOptions extends ParallelOptions {
  /** Largest gradient bucket, in MiB (default 25, as PyTorch). Each bucket is one flat buffer reduced by one all-reduce. */
  readonly bucketCapMb?: number;
  /**
   * Find the parameters the loss does not depend on in each step and reduce their (zero or
   * accumulated) gradients anyway (default false: a parameter that got no gradient is an error
   * naming it, as PyTorch's `find_unused_parameters=False`).
   */
  readonly findUnusedParameters?: boolean;
  /** The graph is the same every step: which parameters are used (and how often) is learnt in the first step and reused. */
  readonly staticGraph?: boolean;
  /** Make each parameter's `.grad` a view into its bucket so backward accumulates in place and no copy is made (default true). */
  readonly gradientAsBucketView?: boolean;
  /** Send rank 0's buffers (running statistics) to every rank after each optimizer step (default true). */
  readonly broadcastBuffers?: boolean;
  /** Print the bucket layout and usage hints on rank 0 (default true; `ddp_notverbose` turns it off). */
  readonly verbose?: boolean;
}

export type ResolvedDDPOptions = Readonly<Required<DDPOptions>>;

export const DDP_DEFAULTS: ResolvedDDPOptions = Object.freeze({
  ...PARALLEL_DEFAULTS,
  bucketCapMb: 25,
  findUnusedParameters: false,
  staticGraph: false,
  gradientAsBucketView: true,
  broadcastBuffers: true,
  verbose: true,
});

/** Option → what is allowed, for error messages. */
const ALLOWED: Record<keyof DDPOptions, string> = {
  ...PARALLEL_ALLOWED,
  bucketCapMb: "a number of MiB greater than 0 (default 25)",
  findUnusedParameters: "true or false",
  staticGraph: "true or false",
  gradientAsBucketView: "true or false",
  broadcastBuffers: "true or false",
  verbose: "true or false",
};

const schema = z.strictObject({
  ...PARALLEL_SHAPE,
  bucketCapMb: z.number().positive().finite().optional(),
  findUnusedParameters: z.boolean().optional(),
  staticGraph: z.boolean().optional(),
  gradientAsBucketView: z.boolean().optional(),
  broadcastBuffers: z.boolean().optional(),
  verbose: z.boolean().optional(),
});

/** A bad DDP option; `option` names it. */
export class DDPOptionError extends StrategyOptionError {
  override readonly name = "DDPOptionError";
}

/** Validates DDP options and fills in the defaults; throws DDPOptionError naming the first bad option. */
export function parseDDPOptions(input: unknown, strategyName = "ddp"): ResolvedDDPOptions {
  return parseStrategyOptions<DDPOptions>(
    { schema, allowed: ALLOWED, defaults: DDP_DEFAULTS, error: (option, message) => new DDPOptionError(option, message) },
    input,
    strategyName,
  );
}
