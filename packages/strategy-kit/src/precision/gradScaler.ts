/**
 * Dynamic loss scaling for fp16 (PyTorch's GradScaler): multiply the loss by a large scale so small
 * gradients survive fp16, divide the gradients back before the step, skip the step and halve the
 * scale when they overflowed, and double it after `growthInterval` clean steps.
 */
import { type Tensor, noGrad, scope } from "@fulgur/tensor";
import { gradientsAreFinite } from "./finite";

export interface GradScalerOptions {
  initScale?: number;
  growthFactor?: number;
  backoffFactor?: number;
  growthInterval?: number;
}

export class GradScaler {
  scaleValue: number;
  private goodSteps = 0;
  private readonly growthFactor: number;
  private readonly backoffFactor: number;
  private readonly growthInterval: number;

  constructor(options: GradScalerOptions = {}) {
    this.scaleValue = options.initScale ?? 2 ** 16;
    this.growthFactor = options.growthFactor ?? 2;
    this.backoffFactor = options.backoffFactor ?? 0.5;
    this.growthInterval = options.growthInterval ?? 2000;
  }

  scale(loss: Tensor): Tensor {
    return loss.mul(this.scaleValue);
  }

  /** Divides gradients by the scale in place; returns whether all of them are finite. */
  unscale(grads: readonly Tensor[]): boolean {
    const inv = 1 / this.scaleValue;
    noGrad(() => scope(() => grads.forEach((g) => g.mul_(inv))));
    return gradientsAreFinite(grads);
  }

  update(finite: boolean): void {
    if (!finite) {
      this.scaleValue *= this.backoffFactor;
      this.goodSteps = 0;
      return;
    }
    if (++this.goodSteps >= this.growthInterval) {
      this.scaleValue *= this.growthFactor;
      this.goodSteps = 0;
    }
  }

  stateDict(): Record<string, number> {
    return { scale: this.scaleValue, goodSteps: this.goodSteps };
  }

  loadStateDict(state: Record<string, number>): void {
    if (typeof state.scale === "number") this.scaleValue = state.scale;
    if (typeof state.goodSteps === "number") this.goodSteps = state.goodSteps;
  }
}
