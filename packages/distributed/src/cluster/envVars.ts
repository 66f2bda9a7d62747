/**
 * Reading rank variables out of an environment, with errors that name the variable and its value.
 * A job started with RANK=4 and WORLD_SIZE=4 must fail on every rank with that sentence, not hang
 * in a rendezvous that can never complete.
 */
import { DistributedArgumentError } from "../errors";

export type Env = Readonly<Record<string, string | undefined>>;

/** The variable's value, or undefined when unset or empty (SLURM exports some as empty). */
export function optional(env: Env, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v.trim() === "" ? undefined : v.trim();
}

export function required(env: Env, name: string, hint: string): string {
  const v = optional(env, name);
  if (v === undefined) throw new DistributedArgumentError(`${name} is not set; ${hint}`);
  return v;
}

/** Parses a decimal integer in [min, max], naming the variable and the allowed range on failure. */
export function parseInteger(name: string, value: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!/^[+-]?\d+$/.test(value)) {
    throw new DistributedArgumentError(`${name}=${JSON.stringify(value)} is not an integer; expected an integer from ${min}${rangeEnd(max)}`);
  }
  const n = Number(value);
  if (n < min || n > max) {
    throw new DistributedArgumentError(`${name}=${value} is out of range; expected an integer from ${min}${rangeEnd(max)}`);
  }
  return n;
}

function rangeEnd(max: number): string {
  return max === Number.MAX_SAFE_INTEGER ? " up" : ` to ${max}`;
}

export function optionalInteger(env: Env, name: string, min: number, max?: number): number | undefined {
  const v = optional(env, name);
  return v === undefined ? undefined : parseInteger(name, v, min, max);
}

export function requiredInteger(env: Env, name: string, hint: string, min: number, max?: number): number {
  return parseInteger(name, required(env, name, hint), min, max);
}

/** Checks that a rank variable is below the size it indexes into. */
export function checkBelow(rankName: string, rank: number, sizeName: string, size: number): void {
  if (rank >= size) {
    throw new DistributedArgumentError(`${rankName}=${rank} must be less than ${sizeName}=${size}`);
  }
}

export function parsePort(name: string, value: string): number {
  return parseInteger(name, value, 1, 65535);
}
