/**
 * Parsers for flag values, given to commander's `argParser`. Each rejects with what is allowed;
 * commander adds the flag and the value, so a bad flag reads
 * `option '--steps <n>' argument '0' is invalid. expected a positive integer`.
 */
import { InvalidArgumentError } from "commander";

const INTEGER = /^[+-]?\d+$/;

export function integerIn(min: number, max: number, allowed: string): (value: string) => number {
  return (value) => {
    const v = value.trim();
    const n = Number(v);
    if (!INTEGER.test(v) || !Number.isSafeInteger(n) || n < min || n > max) throw new InvalidArgumentError(allowed);
    return n;
  };
}

export const positiveInt = (what = ""): ((value: string) => number) =>
  integerIn(1, Number.MAX_SAFE_INTEGER, `expected a positive integer${what ? ` (${what})` : ""}`);

export const nonNegativeInt = (what = ""): ((value: string) => number) =>
  integerIn(0, Number.MAX_SAFE_INTEGER, `expected a non-negative integer${what ? ` (${what})` : ""}`);

export function oneOf<T extends string>(values: readonly T[], what = ""): (value: string) => T {
  return (value) => {
    if (!(values as readonly string[]).includes(value)) {
      throw new InvalidArgumentError(`expected one of ${values.join(", ")}${what ? ` (${what})` : ""}`);
    }
    return value as T;
  };
}

export function nonEmpty(what: string): (value: string) => string {
  return (value) => {
    if (value.trim() === "") throw new InvalidArgumentError(`expected ${what}`);
    return value;
  };
}

/** A name as the plugin registries accept it. */
export function pluginName(kind: string): (value: string) => string {
  return (value) => {
    if (!/^[A-Za-z0-9_.:-]+$/.test(value)) {
      throw new InvalidArgumentError(`expected a ${kind} name: letters, digits, '_', '.', ':' or '-' (see \`fulgur strategies\`)`);
    }
    return value;
  };
}

/** Repeatable flags (`--set a=1 --set b=2`). */
export function collect<T>(parse: (value: string) => T): (value: string, previous: T[] | undefined) => T[] {
  return (value, previous) => [...(previous ?? []), parse(value)];
}

/** A JSON object (`--strategy-options '{"stages": 2}'`). */
export function jsonObject(what: string): (value: string) => Record<string, unknown> {
  return (value) => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(value);
    } catch (e) {
      throw new InvalidArgumentError(`expected a JSON object (${what}); ${(e as Error).message}`);
    }
    if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
      throw new InvalidArgumentError(`expected a JSON object (${what}), got ${Array.isArray(parsed) ? "an array" : JSON.stringify(parsed)}`);
    }
    return parsed as Record<string, unknown>;
  };
}
