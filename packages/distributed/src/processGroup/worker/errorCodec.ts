/**
 * Errors across the thread boundary. A collective fails in the transport's worker thread, but the
 * caller catches it on its own thread and branches on its class (DESIGN.md decision 12: a
 * CollectiveTimeoutError, a PeerLostError naming `peerGlobalRank`...). Structured cloning keeps
 * only a plain Error, so the worker sends the class name, message and fields, and the caller's
 * thread rebuilds an error of the same class with the same message and fields.
 */
import * as errors from "../../errors";

export interface ErrorRecord {
  /** The class, by its `name`. */
  readonly name: string;
  readonly message: string;
  readonly stack?: string;
  /** Own enumerable fields (`context`, `peerGlobalRank`, ...), those that survive cloning. */
  readonly fields: Readonly<Record<string, unknown>>;
  readonly cause?: ErrorRecord;
}

type ErrorClass = abstract new (...args: never[]) => Error;

/**
 * The classes an error may be rebuilt as, by name: every error class of this package (errors.ts
 * names each after its class) and the built-in ones it throws; anything else comes back as a plain
 * Error with its name.
 */
const CLASSES: Readonly<Record<string, ErrorClass>> = {
  Error,
  TypeError,
  RangeError,
  ...Object.fromEntries(Object.entries(errors).filter(([, v]) => typeof v === "function" && v.prototype instanceof Error)),
};

export function toRecord(err: unknown, depth = 0): ErrorRecord {
  if (!(err instanceof Error)) return { name: "Error", message: String(err), fields: {} };
  const fields: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(err)) {
    if (k === "cause" || k === "stack" || k === "message") continue;
    try {
      fields[k] = structuredClone(v);
    } catch {
      // A field that cannot cross threads (a function, a socket) is left behind.
    }
  }
  const cause = err.cause !== undefined && depth < 4 ? toRecord(err.cause, depth + 1) : undefined;
  return { name: err.name, message: err.message, stack: err.stack, fields, cause };
}

/**
 * An error of the recorded class, built without its constructor (whose message is derived from its
 * arguments) so that message and fields are exactly the worker's. Its stack is this thread's, where
 * the caller waited, followed by the worker's.
 */
export function fromRecord(record: ErrorRecord): Error {
  const cls = Object.hasOwn(CLASSES, record.name) ? CLASSES[record.name] : Error;
  const err = Object.create(cls.prototype) as Error;
  Object.assign(err, record.fields);
  if (err.name !== record.name) Object.defineProperty(err, "name", { value: record.name, writable: true, configurable: true });
  Object.defineProperty(err, "message", { value: record.message, writable: true, configurable: true });
  Error.captureStackTrace(err, fromRecord);
  const remote = record.stack?.split("\n").filter((l) => l.trimStart().startsWith("at ")) ?? [];
  if (remote.length > 0) err.stack = `${err.stack}\n    --- in the process group's worker thread ---\n${remote.join("\n")}`;
  if (record.cause) Object.defineProperty(err, "cause", { value: fromRecord(record.cause), writable: true, configurable: true });
  return err;
}
