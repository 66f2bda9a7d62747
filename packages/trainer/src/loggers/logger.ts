/** Where metrics go. Only rank 0 logs (the Trainer does not call loggers on other ranks). */

export type Metrics = Record<string, number>;

export interface Logger {
  readonly name: string;
  /** The directory this logger writes into (checkpoints go beside it by default). */
  readonly logDir: string;
  logHyperparams(params: Record<string, unknown>): void;
  logMetrics(metrics: Metrics, step: number): void;
  /** Flush buffered output. */
  finalize(status: "success" | "failed" | "interrupted"): void;
}

/** The next free `version_N` directory name under `root/name`. */
export function nextVersion(existing: readonly string[]): number {
  let max = -1;
  for (const e of existing) {
    const m = /^version_(\d+)$/.exec(e);
    if (m) max = Math.max(max, Number(m[1]));
  }
  return max + 1;
}
