/**
 * Saves checkpoints every N optimizer steps and/or at the end of every N epochs, keeps the best
 * `saveTopK` by a monitored metric (or the most recent ones without one), and optionally a
 * `last.safetensors`. Writes go through the strategy (rank 0 for replicated strategies), which
 * writes to a temporary name and renames, so a crash never leaves a torn checkpoint.
 */
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Callback } from "./callback";
import type { Trainer } from "../trainer";

export interface ModelCheckpointOptions {
  /** Directory (default: `<logDir>/checkpoints` or `<defaultRootDir>/checkpoints`). */
  dirpath?: string;
  /** Template: `{epoch}`, `{step}` and any logged metric `{val_loss}` / `{val_loss:.3f}`. */
  filename?: string;
  monitor?: string;
  mode?: "min" | "max";
  /** How many to keep: -1 all, 0 none (only `last`), k the best k (default 1). */
  saveTopK?: number;
  saveLast?: boolean;
  everyNTrainSteps?: number;
  /** Save at the end of every N epochs (default 1 unless everyNTrainSteps is set). */
  everyNEpochs?: number;
}

interface Saved {
  path: string;
  score: number;
  step: number;
}

export class ModelCheckpoint implements Callback {
  readonly name = "ModelCheckpoint";
  readonly stateKey: string;
  private saved: Saved[] = [];
  private readonly opts: Required<Omit<ModelCheckpointOptions, "dirpath" | "monitor">> & { dirpath?: string; monitor?: string };
  lastPath: string | null = null;

  constructor(options: ModelCheckpointOptions = {}) {
    const mode = options.mode ?? "min";
    if (mode !== "min" && mode !== "max") throw new TypeError(`ModelCheckpoint mode: got ${JSON.stringify(mode)}; expected "min" or "max"`);
    const topK = options.saveTopK ?? 1;
    if (!Number.isInteger(topK) || topK < -1) throw new RangeError(`ModelCheckpoint saveTopK: got ${topK}; expected -1, 0 or a positive integer`);
    for (const f of ["everyNTrainSteps", "everyNEpochs"] as const) {
      const v = options[f];
      if (v !== undefined && (!Number.isInteger(v) || v < 0)) throw new RangeError(`ModelCheckpoint ${f}: got ${v}; expected a non-negative integer`);
    }
    this.opts = {
      dirpath: options.dirpath,
      filename: options.filename ?? "epoch={epoch}-step={step}",
      monitor: options.monitor,
      mode,
      saveTopK: topK,
      saveLast: options.saveLast ?? false,
      everyNTrainSteps: options.everyNTrainSteps ?? 0,
      everyNEpochs: options.everyNEpochs ?? (options.everyNTrainSteps ? 0 : 1),
    };
    this.stateKey = `ModelCheckpoint{monitor=${this.opts.monitor ?? ""},mode=${mode}}`;
  }

  /** The kept checkpoint with the best monitored score (or the latest). */
  get bestModelPath(): string | null {
    if (this.saved.length === 0) return null;
    return [...this.saved].sort((a, b) => this.better(a.score, b.score))[0].path;
  }

  get savedPaths(): string[] {
    return this.saved.map((s) => s.path);
  }

  dir(trainer: Trainer): string {
    return this.opts.dirpath ?? join(trainer.logDir, "checkpoints");
  }

  private better(a: number, b: number): number {
    return this.opts.mode === "min" ? a - b : b - a;
  }

  formatName(epoch: number, step: number, metrics: Record<string, number>): string {
    const name = this.opts.filename.replace(/\{([A-Za-z0-9_/.-]+?)(?::\.(\d+)f)?\}/g, (_, key: string, digits?: string) => {
      const v = key === "epoch" ? epoch : key === "step" ? step : metrics[key];
      if (v === undefined) return `${key}=nan`;
      return digits ? v.toFixed(Number(digits)) : String(v);
    });
    return `${name}.safetensors`;
  }

  async onTrainBatchEnd(trainer: Trainer): Promise<void> {
    const n = this.opts.everyNTrainSteps;
    if (n > 0 && trainer.globalStep % n === 0) await this.save(trainer);
  }

  async onTrainEpochEnd(trainer: Trainer): Promise<void> {
    const n = this.opts.everyNEpochs;
    if (n > 0 && (trainer.currentEpoch + 1) % n === 0) await this.save(trainer);
  }

  async save(trainer: Trainer): Promise<void> {
    const metrics = trainer.callbackMetrics;
    const step = trainer.globalStep;
    if (this.saved.some((s) => s.step === step)) return;
    const dir = this.dir(trainer);
    if (trainer.isGlobalZero && !existsSync(dir)) mkdirSync(dir, { recursive: true });
    let score = step;
    if (this.opts.monitor) {
      const v = metrics[this.opts.monitor];
      if (v === undefined) {
        throw new Error(
          `ModelCheckpoint: monitor "${this.opts.monitor}" was not logged; logged metrics: ${Object.keys(metrics).join(", ") || "(none)"}`,
        );
      }
      score = v;
    }
    const topK = this.opts.saveTopK;
    const keepsIt = topK === -1 || (topK > 0 && (this.saved.length < topK || this.better(score, this.worst().score) < 0));
    if (keepsIt) {
      const path = join(dir, this.formatName(trainer.currentEpoch, step, metrics));
      await trainer.saveCheckpoint(path);
      this.saved.push({ path, score, step });
      if (!this.opts.monitor) this.saved.sort((a, b) => b.step - a.step);
      if (topK > 0 && this.saved.length > topK) {
        const drop = this.opts.monitor ? this.worst() : this.saved[this.saved.length - 1];
        this.saved = this.saved.filter((s) => s !== drop);
        await trainer.removeCheckpoint(drop.path);
      }
    }
    if (this.opts.saveLast) {
      this.lastPath = join(dir, "last.safetensors");
      await trainer.saveCheckpoint(this.lastPath);
    }
  }

  private worst(): Saved {
    if (!this.opts.monitor) return [...this.saved].sort((a, b) => a.step - b.step)[0];
    return [...this.saved].sort((a, b) => this.better(b.score, a.score))[0];
  }

  stateDict(): Record<string, unknown> {
    return { saved: this.saved, lastPath: this.lastPath };
  }

  loadStateDict(state: Record<string, unknown>): void {
    if (Array.isArray(state.saved)) this.saved = state.saved as Saved[];
    if (typeof state.lastPath === "string") this.lastPath = state.lastPath;
  }
}
