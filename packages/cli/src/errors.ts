/**
 * The two kinds of failure the CLI tells apart. A UsageError is the user's input (a flag, a config
 * file, a path) and exits with 2 before any work starts; anything else is a failure of the work
 * itself and exits with 1, its message shown without a stack unless FULGUR_DEBUG=1.
 */

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

export class UsageError extends Error {
  override readonly name = "UsageError";
  readonly exitCode = EXIT_USAGE;
}

/** Shows a value the way the user typed it (strings quoted), short enough for one line. */
export function showValue(value: unknown): string {
  if (value === undefined) return "nothing";
  if (typeof value === "function") return "a function";
  let s: string;
  try {
    s = JSON.stringify(value) ?? String(value);
  } catch {
    s = String(value);
  }
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/**
 * A bad flag value, worded as commander words its own argument errors, so every flag error reads
 * the same: which flag, the value given, what is allowed.
 */
export function invalidOption(flags: string, value: unknown, allowed: string): UsageError {
  const shown = typeof value === "string" ? value : showValue(value);
  return new UsageError(`option '${flags}' argument '${shown}' is invalid. ${allowed}`);
}

export function invalidArgument(name: string, value: unknown, allowed: string): UsageError {
  const shown = typeof value === "string" ? value : showValue(value);
  return new UsageError(`command-argument value '${shown}' is invalid for argument '${name}'. ${allowed}`);
}
