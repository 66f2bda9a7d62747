/**
 * CSV and JSON-lines loggers, Lightning's layout: `<root>/<name>/version_<n>/metrics.{csv,jsonl}`
 * and `hparams.json`. Rows are appended as they come, so a crash loses nothing already logged.
 * The CSV header grows when new metric names appear (the file is rewritten then, atomically).
 */
import { appendFileSync, existsSync, mkdirSync, readdirSync, renameSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Logger, type Metrics, nextVersion } from "./logger";

export interface FileLoggerOptions {
  /** Root directory (default "."). */
  saveDir?: string;
  /** Experiment name (default "lightning_logs"-style "fulgur_logs"). */
  name?: string;
  /** Fixed version; default: the next free one. */
  version?: number | string;
}

function resolveDir(options: FileLoggerOptions): string {
  const base = join(options.saveDir ?? ".", options.name ?? "fulgur_logs");
  let version = options.version;
  if (version === undefined) version = nextVersion(existsSync(base) ? readdirSync(base) : []);
  return join(base, typeof version === "number" ? `version_${version}` : version);
}

function writeAtomic(path: string, text: string): void {
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, text);
  renameSync(tmp, path);
}

abstract class FileLogger implements Logger {
  abstract readonly name: string;
  private dir: string | null = null;
  constructor(private readonly options: FileLoggerOptions = {}) {}

  get logDir(): string {
    if (!this.dir) {
      this.dir = resolveDir(this.options);
      mkdirSync(this.dir, { recursive: true });
    }
    return this.dir;
  }

  logHyperparams(params: Record<string, unknown>): void {
    writeAtomic(join(this.logDir, "hparams.json"), JSON.stringify(params, null, 2) + "\n");
  }

  abstract logMetrics(metrics: Metrics, step: number): void;
  finalize(_status: "success" | "failed" | "interrupted"): void {}
}

export class CSVLogger extends FileLogger {
  readonly name = "csv";
  private columns: string[] = [];
  private rows: Record<string, number | string>[] = [];

  get path(): string {
    return join(this.logDir, "metrics.csv");
  }

  logMetrics(metrics: Metrics, step: number): void {
    const row: Record<string, number | string> = { step, ...metrics };
    this.rows.push(row);
    const fresh = Object.keys(row).filter((k) => !this.columns.includes(k));
    if (fresh.length > 0 || this.columns.length === 0) {
      this.columns.push(...fresh);
      writeAtomic(this.path, [this.columns.join(","), ...this.rows.map((r) => this.line(r))].join("\n") + "\n");
    } else appendFileSync(this.path, this.line(row) + "\n");
  }

  private line(r: Record<string, number | string>): string {
    return this.columns.map((c) => (r[c] === undefined ? "" : String(r[c]))).join(",");
  }
}

export class JSONLinesLogger extends FileLogger {
  readonly name = "jsonl";

  get path(): string {
    return join(this.logDir, "metrics.jsonl");
  }

  logMetrics(metrics: Metrics, step: number): void {
    appendFileSync(this.path, JSON.stringify({ step, ...metrics, time: new Date().toISOString() }) + "\n");
  }
}
