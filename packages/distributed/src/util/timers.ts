/**
 * Timeouts as this package uses them: validated once with an error naming the field, and armed
 * safely. Node turns any delay above 2^31-1 ms into 1 ms (with a warning), so a user asking for
 * "a very long time" would get an instant timeout; such delays are treated as "never".
 */
import { DistributedArgumentError } from "../errors";

const MAX_TIMER_MS = 2 ** 31 - 1;

/** Checks a timeout option: a non-negative number of milliseconds, or Infinity for none. */
export function checkTimeout(value: unknown, field: string): number {
  if (typeof value !== "number" || Number.isNaN(value) || value < 0) {
    throw new DistributedArgumentError(
      `${field}: got ${JSON.stringify(value)}; expected a non-negative number of milliseconds (or Infinity for no timeout)`,
    );
  }
  return value;
}

/** setTimeout that treats delays too large for Node's timers (and Infinity) as "never fires". */
export function armTimer(ms: number, fn: () => void): NodeJS.Timeout | undefined {
  if (!Number.isFinite(ms) || ms > MAX_TIMER_MS) return undefined;
  return setTimeout(fn, Math.max(0, ms));
}
