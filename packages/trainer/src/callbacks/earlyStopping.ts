/** Stops training when a monitored metric has not improved by `minDelta` for `patience` checks. */
import type { Callback } from "./callback";
import type { Trainer } from "../trainer";

export interface EarlyStoppingOptions {
  monitor: string;
  mode?: "min" | "max";
  patience?: number;
  minDelta?: number;
  /** Stop at once when the metric is NaN or infinite (default true). */
  checkFinite?: boolean;
}

export class EarlyStopping implements Callback {
  readonly name = "EarlyStopping";
  readonly stateKey: string;
  best: number;
  wait = 0;
  stoppedReason: string | null = null;
  private readonly mode: "min" | "max";
  private readonly patience: number;
  private readonly minDelta: number;

  constructor(private readonly options: EarlyStoppingOptions) {
    if (!options || typeof options.monitor !== "string" || options.monitor === "") {
      throw new TypeError(`EarlyStopping monitor: got ${JSON.stringify(options?.monitor)}; expected a logged metric name`);
    }
    this.mode = options.mode ?? "min";
    if (this.mode !== "min" && this.mode !== "max") throw new TypeError(`EarlyStopping mode: got ${JSON.stringify(this.mode)}; expected "min" or "max"`);
    this.patience = options.patience ?? 3;
    if (!Number.isInteger(this.patience) || this.patience < 0) throw new RangeError(`EarlyStopping patience: got ${this.patience}; expected an integer >= 0`);
    this.minDelta = Math.abs(options.minDelta ?? 0);
    this.best = this.mode === "min" ? Infinity : -Infinity;
    this.stateKey = `EarlyStopping{monitor=${options.monitor},mode=${this.mode}}`;
  }

  onValidationEnd(trainer: Trainer): void {
    const v = trainer.callbackMetrics[this.options.monitor];
    if (v === undefined) {
      throw new Error(`EarlyStopping: monitor "${this.options.monitor}" was not logged; logged metrics: ${Object.keys(trainer.callbackMetrics).join(", ") || "(none)"}`);
    }
    if ((this.options.checkFinite ?? true) && !Number.isFinite(v)) {
      this.stoppedReason = `${this.options.monitor} = ${v} is not finite`;
      trainer.shouldStop = true;
      return;
    }
    const improved = this.mode === "min" ? v < this.best - this.minDelta : v > this.best + this.minDelta;
    if (improved) {
      this.best = v;
      this.wait = 0;
    } else if (++this.wait >= this.patience) {
      this.stoppedReason = `${this.options.monitor} did not improve by ${this.minDelta} for ${this.wait} checks (best ${this.best})`;
      trainer.shouldStop = true;
    }
  }

  stateDict(): Record<string, unknown> {
    return { best: this.best, wait: this.wait };
  }

  loadStateDict(state: Record<string, unknown>): void {
    if (typeof state.best === "number") this.best = state.best;
    if (typeof state.wait === "number") this.wait = state.wait;
  }
}
