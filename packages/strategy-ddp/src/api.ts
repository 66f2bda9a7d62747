/**
 * The options of the DDP strategies, validated once at construction (DESIGN.md decision 10): a bad
 * option fails before any process is launched, naming the option, the value given and what is
 * allowed. zod finds the bad field; the sentence comes from the table below so every error reads
 * the same whatever zod's own wording. Parsed options are frozen.
 */
import { z } from "zod";

/** How the ranks are started when nothing started them (no torchrun variables, no SLURM). */
export type StartMethod = "relaunch" | "spawn";

export interface DDPOptions {
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
  /** Longest a collective may wait for the other ranks, in ms (default 30 minutes). */
  readonly timeoutMs?: number;
  /** "relaunch": run the script again once per rank (strategy `ddp`); "spawn": fork workers of it (`ddp_spawn`). */
  readonly startMethod?: StartMethod;
  /** Print the bucket layout and usage hints on rank 0 (default true; `ddp_notverbose` turns it off). */
  readonly verbose?: boolean;
  /** After a rank fails, how long the launcher lets the others stop before killing them, in ms (default 5000). */
  readonly killGraceMs?: number;
}

export type ResolvedDDPOptions = Readonly<Required<DDPOptions>>;

export const DDP_DEFAULTS: ResolvedDDPOptions = Object.freeze({
  bucketCapMb: 25,
  findUnusedParameters: false,
  staticGraph: false,
  gradientAsBucketView: true,
  broadcastBuffers: true,
  timeoutMs: 30 * 60 * 1000,
  startMethod: "relaunch",
  verbose: true,
  killGraceMs: 5_000,
});

/** Option → what is allowed, for error messages. */
const ALLOWED: Record<keyof DDPOptions, string> = {
  bucketCapMb: "a number of MiB greater than 0 (default 25)",
  findUnusedParameters: "true or false",
  staticGraph: "true or false",
  gradientAsBucketView: "true or false",
  broadcastBuffers: "true or false",
  timeoutMs: "a positive integer number of milliseconds (default 1800000)",
  startMethod: 'one of "relaunch", "spawn"',
  verbose: "true or false",
  killGraceMs: "a non-negative integer number of milliseconds",
};

const schema = z.strictObject({
  bucketCapMb: z.number().positive().finite().optional(),
  findUnusedParameters: z.boolean().optional(),
  staticGraph: z.boolean().optional(),
  gradientAsBucketView: z.boolean().optional(),
  broadcastBuffers: z.boolean().optional(),
  timeoutMs: z.number().int().positive().optional(),
  startMethod: z.enum(["relaunch", "spawn"]).optional(),
  verbose: z.boolean().optional(),
  killGraceMs: z.number().int().min(0).optional(),
});

/** A bad DDP option; `option` names it. */
export class DDPOptionError extends TypeError {
  override readonly name = "DDPOptionError";
  constructor(
    readonly option: string,
    message: string,
  ) {
    super(message);
  }
}

function show(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "function") return "a function";
  try {
    const s = JSON.stringify(value);
    return s === undefined ? String(value) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
  } catch {
    return String(value);
  }
}

/** Validates DDP options and fills in the defaults; throws DDPOptionError naming the first bad option. */
export function parseDDPOptions(input: unknown, strategyName = "ddp"): ResolvedDDPOptions {
  const raw = input ?? {};
  if (typeof raw !== "object" || Array.isArray(raw)) {
    throw new DDPOptionError("options", `${strategyName} options: got ${show(raw)}; expected an object of options (${Object.keys(ALLOWED).join(", ")})`);
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    if (issue.code === "unrecognized_keys") {
      const keys = issue.keys.map((k) => JSON.stringify(k)).join(", ");
      throw new DDPOptionError(issue.keys[0], `${strategyName}: unknown option(s) ${keys}; allowed options are ${Object.keys(ALLOWED).join(", ")}`);
    }
    const field = String(issue.path[0] ?? "options") as keyof DDPOptions;
    const value = (raw as Record<string, unknown>)[field];
    throw new DDPOptionError(field, `${strategyName} option ${field}: got ${show(value)}; expected ${ALLOWED[field] ?? "a valid value"}`);
  }
  const o = parsed.data;
  const out: Record<string, unknown> = { ...DDP_DEFAULTS };
  for (const [k, v] of Object.entries(o)) if (v !== undefined) out[k] = v;
  return Object.freeze(out) as unknown as ResolvedDDPOptions;
}
