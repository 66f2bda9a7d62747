/**
 * Argument checks shared by layers, the GPT config and the optimizers. Every failure names where it
 * happened, the field, the value it got and what is allowed, so a bad hyperparameter is caught when
 * the object is built rather than as a NaN loss a thousand steps later.
 */

function fail(where: string, field: string, value: unknown, allowed: string): never {
  throw new RangeError(`${where}: ${field} must be ${allowed}; got ${JSON.stringify(value) ?? String(value)}`);
}

export function checkPositiveInt(where: string, field: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value <= 0) {
    fail(where, field, value, "a positive integer");
  }
  return value;
}

export function checkNonNegativeInt(where: string, field: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0) {
    fail(where, field, value, "a non-negative integer");
  }
  return value;
}

export function checkNonNegative(where: string, field: string, value: unknown): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
    fail(where, field, value, "a finite number >= 0");
  }
  return value;
}

export function checkPositive(where: string, field: string, value: unknown): number {
  if (typeof value !== "number" || !(value > 0) || !Number.isFinite(value)) {
    fail(where, field, value, "a finite number > 0");
  }
  return value;
}

/** A number in [lo, hi) (or [lo, hi] when `inclusiveHigh`). */
export function checkRange(
  where: string,
  field: string,
  value: unknown,
  lo: number,
  hi: number,
  inclusiveHigh = false,
): number {
  const ok = typeof value === "number" && value >= lo && (inclusiveHigh ? value <= hi : value < hi);
  if (!ok) fail(where, field, value, `a number in [${lo}, ${hi}${inclusiveHigh ? "]" : ")"}`);
  return value as number;
}

export function checkBoolean(where: string, field: string, value: unknown): boolean {
  if (typeof value !== "boolean") fail(where, field, value, "true or false");
  return value;
}

/** Rejects option keys the callee does not know, so a typo (`weight_decay` for `weightDecay`) is not silently ignored. */
export function checkKnownKeys(where: string, options: object, known: readonly string[]): void {
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) {
      throw new RangeError(`${where}: unknown option ${JSON.stringify(key)}; allowed: ${known.join(", ")}`);
    }
  }
}
