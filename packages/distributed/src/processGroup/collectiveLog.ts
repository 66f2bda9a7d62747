/**
 * The last collectives a rank issued (DESIGN.md decision 12): op, shape, dtype, sequence number,
 * where in the user's code it was called and how it ended. When a job hangs or fails, printing
 * this on every rank shows at once which rank is behind, and at which line.
 *
 * The log lives beside the collectives, in the transport's worker thread; the call site is taken
 * on the caller's thread, where the user's stack is, and handed over with the call (`attributedTo`).
 */

export type CollectiveState = "queued" | "running" | "completed" | "failed";

export interface CollectiveRecord {
  readonly group: string;
  readonly op: string;
  readonly seq: number;
  readonly dtype: string;
  readonly shape: readonly number[];
  /** The first stack frame outside this package, e.g. "at step (/app/train.ts:42:7)". */
  readonly callSite: string;
  readonly state: CollectiveState;
  readonly issuedAt: number;
  readonly finishedAt?: number;
  readonly error?: string;
}

type Mutable<T> = { -readonly [K in keyof T]: T[K] };

export class CollectiveLog {
  private readonly entries: Mutable<CollectiveRecord>[] = [];
  /** The call site of the call being issued, when it was taken on another thread. */
  private site: string | undefined;

  constructor(readonly capacity = 64) {}

  /** Records a newly issued collective; returns a handle to update its state. */
  add(entry: Omit<CollectiveRecord, "state" | "issuedAt" | "callSite">): (state: CollectiveState, error?: unknown) => void {
    const record: Mutable<CollectiveRecord> = { ...entry, callSite: this.site ?? callSite(), state: "queued", issuedAt: Date.now() };
    this.entries.push(record);
    if (this.entries.length > this.capacity) this.entries.shift();
    return (state, error) => {
      record.state = state;
      if (state === "completed" || state === "failed") record.finishedAt = Date.now();
      if (error !== undefined) record.error = error instanceof Error ? error.message : String(error);
    };
  }

  /** Runs `issue`, whose records name `site` as their call site. */
  attributedTo<T>(site: string, issue: () => T): T {
    this.site = site;
    try {
      return issue();
    } finally {
      this.site = undefined;
    }
  }

  /** Oldest first; copies, so callers cannot change the log. */
  snapshot(): CollectiveRecord[] {
    return this.entries.map((e) => Object.freeze({ ...e, shape: [...e.shape] }));
  }
}

/** One line per record, for logs and error reports. */
export function formatCollectives(records: readonly CollectiveRecord[]): string {
  return records
    .map((r) => `#${r.seq} ${r.op} [${r.shape.join(", ")}] ${r.dtype} on "${r.group}": ${r.state}${r.error ? ` (${r.error})` : ""} ${r.callSite}`)
    .join("\n");
}

// Frames from this package's own files (source or built) are skipped to reach the user's call.
const INTERNAL = /[\\/](distributed[\\/](src|dist)|node_modules[\\/]@fulgur[\\/]distributed)[\\/]|node:internal|\(native\)/;

/** The first stack frame of the current call outside this package. */
export function callSite(): string {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 30;
  const stack = new Error().stack ?? "";
  Error.stackTraceLimit = limit;
  const frames = stack
    .split("\n")
    .slice(1)
    .map((l) => l.trim())
    .filter((l) => l.startsWith("at "));
  return frames.find((f) => !INTERNAL.test(f)) ?? frames[frames.length - 1] ?? "(unknown call site)";
}
