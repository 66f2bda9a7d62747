/**
 * DeepSpeed's fp16 loss scaling (runtime/fp16/loss_scaler.py, DynamicLossScaler) on the kit's
 * GradScaler, so that "16-mixed" under a DeepSpeed strategy scales as DeepSpeed does: the scale
 * starts at 2^initial_scale_power, doubles after loss_scale_window clean steps, halves (never below
 * min_loss_scale) only after `hysteresis` overflows, and a static loss_scale (> 0) never moves. An
 * overflowing step is skipped either way; the kit's optimizer step does that.
 *
 * The kit's GradScaler differs where DeepSpeed's configs are explicit (a 2000-step window, no
 * hysteresis, no floor), which is why the strategy puts this scaler into the precision rather than
 * only setting the first scale.
 */
import type { Precision } from "@fulgur/core";
import { GradScaler } from "@fulgur/strategy-kit";

export interface LossScalerSettings {
  /** 0: dynamic scaling; > 0: this static scale. */
  readonly lossScale: number;
  readonly initialScalePower: number;
  readonly lossScaleWindow: number;
  readonly hysteresis: number;
  /** Reset the hysteresis after every clean step rather than only when the scale grows. */
  readonly consecutiveHysteresis: boolean;
  readonly minLossScale: number;
}

/** DeepSpeed's defaults (the fp16 block of its config documentation; Lightning passes the same). */
export const DEEPSPEED_FP16_DEFAULTS: LossScalerSettings = Object.freeze({
  lossScale: 0,
  initialScalePower: 16,
  lossScaleWindow: 1000,
  hysteresis: 2,
  consecutiveHysteresis: false,
  minLossScale: 1,
});

export class DeepSpeedLossScaler extends GradScaler {
  /** Clean steps since the last overflow (DeepSpeed's cur_iter - last_overflow_iter). */
  private clean = 0;
  /** Overflows still tolerated before the scale halves (DeepSpeed's cur_hysteresis). */
  private hysteresisLeft: number;

  constructor(readonly settings: LossScalerSettings = DEEPSPEED_FP16_DEFAULTS) {
    super({ initScale: settings.lossScale > 0 ? settings.lossScale : 2 ** settings.initialScalePower });
    this.hysteresisLeft = settings.hysteresis;
  }

  override update(finite: boolean): void {
    const s = this.settings;
    if (s.lossScale > 0) return;
    if (!finite) {
      if (s.hysteresis === 1 || this.hysteresisLeft === 1) this.scaleValue = Math.max(this.scaleValue / 2, s.minLossScale);
      else this.hysteresisLeft--;
      this.clean = 0;
      return;
    }
    if (s.consecutiveHysteresis) this.hysteresisLeft = s.hysteresis;
    this.clean++;
    if (this.clean % s.lossScaleWindow === 0) {
      if (!s.consecutiveHysteresis) this.hysteresisLeft = s.hysteresis;
      this.scaleValue *= 2;
    }
  }

  override stateDict(): Record<string, number> {
    // "goodSteps" as the kit's scaler names it, so either scaler reads the other's state.
    return { scale: this.scaleValue, goodSteps: this.clean, hysteresis: this.hysteresisLeft };
  }

  override loadStateDict(state: Record<string, number>): void {
    if (typeof state.scale === "number") this.scaleValue = state.scale;
    if (typeof state.goodSteps === "number") this.clean = state.goodSteps;
    if (typeof state.hysteresis === "number") this.hysteresisLeft = state.hysteresis;
  }
}

interface ScalerHolder {
  scaler?: unknown;
}

function isGradScaler(value: unknown): value is GradScaler {
  const s = value as Partial<GradScaler> | null;
  return !!s && typeof s.scale === "function" && typeof s.unscale === "function" && typeof s.update === "function" && typeof s.scaleValue === "number";
}

/**
 * Gives a "16-mixed" precision DeepSpeed's scaler; returns a function that puts the old one back,
 * or null when the precision has no scaler to replace (another precision, or one of another shape).
 * Checked by shape, not class (DESIGN.md decision 11). Runs at setup, before any step.
 */
export function installLossScaler(precision: Precision, settings: LossScalerSettings): (() => void) | null {
  const holder = precision as unknown as ScalerHolder;
  if (precision.name !== "16-mixed" || !isGradScaler(holder.scaler)) return null;
  const previous = holder.scaler;
  holder.scaler = new DeepSpeedLossScaler(settings);
  return () => {
    holder.scaler = previous;
  };
}
