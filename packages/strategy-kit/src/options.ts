/**
 * Strategy options, validated once at construction (DESIGN.md decision 10): a bad option fails
 * before any process is launched, naming the option, the value given and what is allowed. zod
 * finds the bad field; the sentence comes from the strategy's table of what each option allows, so
 * every strategy's errors read alike whatever zod's own wording. Parsed options are frozen.
 */
import { z } from "zod";

/** A bad strategy option; `option` names it. */
export class StrategyOptionError extends TypeError {
  override readonly name: string = "StrategyOptionError";
  constructor(
    readonly option: string,
    message: string,
  ) {
    super(message);
  }
}

export function showValue(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "function") return "a function";
  try {
    const s = JSON.stringify(value);
    return s === undefined ? String(value) : s.length > 60 ? `${s.slice(0, 57)}...` : s;
  } catch {
    return String(value);
  }
}

export interface OptionSpec<T extends object> {
  /** A strict zod object: unknown keys are errors. */
  readonly schema: z.ZodType;
  /** Option → what is allowed, for error messages. */
  readonly allowed: Readonly<Record<keyof T & string, string>>;
  readonly defaults: Readonly<Required<T>>;
  /** Builds the error (a strategy may throw its own subclass, e.g. DDPOptionError). */
  readonly error?: (option: string, message: string) => Error;
}

/** Validates options against `spec` and fills in the defaults; throws naming the first bad option. */
export function parseStrategyOptions<T extends object>(spec: OptionSpec<T>, input: unknown, strategyName: string): Readonly<Required<T>> {
  const fail = spec.error ?? ((option: string, message: string) => new StrategyOptionError(option, message));
  const names = Object.keys(spec.allowed).join(", ");
  const raw = input ?? {};
  if (typeof raw !== "object" || Array.isArray(raw)) {
    throw fail("options", `${strategyName} options: got ${showValue(raw)}; expected an object of options (${names})`);
  }
  const parsed = spec.schema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    // A key unknown inside an option's object is that option's bad value, not an unknown option.
    if (issue.code === "unrecognized_keys" && issue.path.length === 0) {
      const keys = issue.keys.map((k) => JSON.stringify(k)).join(", ");
      throw fail(issue.keys[0], `${strategyName}: unknown option(s) ${keys}; allowed options are ${names}`);
    }
    const field = String(issue.path[0] ?? "options");
    const value = (raw as Record<string, unknown>)[field];
    const allowed = (spec.allowed as Record<string, string>)[field] ?? "a valid value";
    throw fail(field, `${strategyName} option ${field}: got ${showValue(value)}; expected ${allowed}`);
  }
  const out: Record<string, unknown> = { ...spec.defaults };
  for (const [k, v] of Object.entries(parsed.data as object)) if (v !== undefined) out[k] = v;
  return Object.freeze(out) as Readonly<Required<T>>;
}

/** How the ranks are started when nothing started them (no torchrun variables, no SLURM). */
export type StartMethod = "relaunch" | "spawn";

/** Options every multi-process strategy shares (ParallelStrategy). */
export interface ParallelOptions {
  /** Longest a collective may wait for the other ranks, in ms (default 30 minutes). */
  readonly timeoutMs?: number;
  /** "relaunch": run the script again once per rank; "spawn": fork workers of it. */
  readonly startMethod?: StartMethod;
  /** After a rank fails, how long the launcher lets the others stop before killing them, in ms (default 5000). */
  readonly killGraceMs?: number;
  /**
   * Which collectives: "auto" (the accelerator's own, NCCL on GPUs, else the CPU group), or
   * "host" (the CPU transport over any device's tensors, staged through host memory: several
   * ranks on one GPU, DESIGN.md decision 16).
   */
  readonly processGroupBackend?: "auto" | "host";
}

export const PARALLEL_DEFAULTS: Readonly<Required<ParallelOptions>> = Object.freeze({
  timeoutMs: 30 * 60 * 1000,
  startMethod: "relaunch",
  killGraceMs: 5_000,
  processGroupBackend: "auto",
});

export const PARALLEL_ALLOWED: Readonly<Record<keyof ParallelOptions, string>> = {
  timeoutMs: "a positive integer number of milliseconds (default 1800000)",
  startMethod: 'one of "relaunch", "spawn"',
  killGraceMs: "a non-negative integer number of milliseconds",
  processGroupBackend: 'one of "auto", "host"',
};

/** The zod shape of ParallelOptions, to spread into a strategy's own strict schema. */
export const PARALLEL_SHAPE = {
  timeoutMs: z.number().int().positive().optional(),
  startMethod: z.enum(["relaunch", "spawn"]).optional(),
  killGraceMs: z.number().int().min(0).optional(),
  processGroupBackend: z.enum(["auto", "host"]).optional(),
};
