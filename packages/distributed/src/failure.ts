/**
 * Failures travel (DESIGN.md decision 12): a rank that hits an exception writes it to the store
 * under one well-known key, and every rank watches that key, so all ranks stop naming the rank
 * that failed — without a shared filesystem, and even when the failing rank's peers are blocked
 * in a collective that will now never complete. The first report wins (compare-and-set), so a
 * cascade of secondary errors never hides the original one.
 */
import type { Store } from "@fulgur/core";
import { RankFailureError, StoreTimeoutError } from "./errors";

export const FAILURE_KEY = "fulgur/failure";

export interface FailureReport {
  readonly rank: number;
  readonly message: string;
  readonly name?: string;
  readonly stack?: string;
  /** Milliseconds since the epoch on the failing rank. */
  readonly time: number;
}

export interface FailureOptions {
  /** Store key of the job's failure record (default "fulgur/failure"); change it to run several jobs on one store. */
  readonly key?: string;
}

export interface WatchOptions extends FailureOptions {
  /** Each wait on the store lasts this long before it is renewed (default 30 s). */
  readonly pollTimeoutMs?: number;
  /** Called when the watch ends because the store went away (rank 0 exited); not a failure report. */
  readonly onStoreLost?: (error: Error) => void;
}

export interface FailureWatch {
  /** Stops watching; a report arriving later is ignored. */
  stop(): void;
  /** Settles when watching ends (report delivered, stopped, or store lost). */
  readonly done: Promise<void>;
}

const decoder = new TextDecoder();

function toReport(rank: number, error: unknown): FailureReport {
  if (error instanceof Error) {
    return { rank, message: error.message, name: error.name, stack: error.stack, time: Date.now() };
  }
  return { rank, message: String(error), time: Date.now() };
}

function parseReport(bytes: Uint8Array): FailureReport {
  try {
    const r = JSON.parse(decoder.decode(bytes)) as FailureReport;
    if (typeof r.rank === "number" && typeof r.message === "string") return r;
  } catch {
    // fall through: a report we cannot read is still a failure
  }
  return { rank: -1, message: `unreadable failure report: ${decoder.decode(bytes).slice(0, 200)}`, time: Date.now() };
}

/** The error a rank throws on learning of another rank's failure. */
export function failureError(report: FailureReport): RankFailureError {
  return new RankFailureError(report.rank, report.message, report.stack);
}

/**
 * Records that `rank` failed with `error`, unless another rank already did. Returns the report
 * that is now stored: this rank's, or the earlier one that won.
 */
export async function reportFailure(store: Store, rank: number, error: unknown, options: FailureOptions = {}): Promise<FailureReport> {
  const key = options.key ?? FAILURE_KEY;
  const stored = await store.compareSet(key, "", JSON.stringify(toReport(rank, error)));
  return parseReport(stored);
}

/** Calls `onFailure` once, as soon as any rank reports a failure. */
export function watchForFailures(
  store: Store,
  onFailure: (report: FailureReport, error: RankFailureError) => void,
  options: WatchOptions = {},
): FailureWatch {
  const key = options.key ?? FAILURE_KEY;
  const pollTimeoutMs = options.pollTimeoutMs ?? 30_000;
  let stopped = false;
  const done = (async () => {
    while (!stopped) {
      let bytes: Uint8Array;
      try {
        bytes = await store.get(key, pollTimeoutMs);
      } catch (err) {
        if (err instanceof StoreTimeoutError) continue;
        if (!stopped) options.onStoreLost?.(err as Error);
        return;
      }
      if (stopped) return;
      stopped = true;
      const report = parseReport(bytes);
      onFailure(report, failureError(report));
    }
  })();
  return {
    stop: () => {
      stopped = true;
    },
    done,
  };
}

/** Report and watch through one object, for a rank that does both (the Trainer). */
export class FailureChannel {
  private watch: FailureWatch | undefined;

  constructor(
    private readonly store: Store,
    readonly rank: number,
    private readonly options: FailureOptions = {},
  ) {}

  report(error: unknown): Promise<FailureReport> {
    return reportFailure(this.store, this.rank, error, this.options);
  }

  /** Starts watching (once); reports of this rank's own failure are delivered too. */
  watchFailures(onFailure: (report: FailureReport, error: RankFailureError) => void, options: Omit<WatchOptions, "key"> = {}): FailureWatch {
    this.watch?.stop();
    this.watch = watchForFailures(this.store, onFailure, { ...this.options, ...options });
    return this.watch;
  }

  stop(): void {
    this.watch?.stop();
  }
}
