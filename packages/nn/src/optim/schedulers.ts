/**
 * Learning-rate schedulers with PyTorch's protocol: construction applies the step-0 rate, each
 * `step()` (once per optimizer step) advances `lastEpoch` and writes the new rate into every param
 * group. Rates are closed forms of the step — base rate times a factor — so resuming from
 * `stateDict()` gives exactly the rates an uninterrupted run would have had.
 */
import { checkNonNegative, checkNonNegativeInt, checkPositiveInt, checkRange } from "../validate";
import type { Optimizer } from "./optimizer";

export interface SchedulerStateDict {
  last_epoch: number;
  base_lrs: number[];
  last_lr: number[];
}

export abstract class LRScheduler {
  readonly optimizer: Optimizer;
  /** Steps taken; 0 right after construction (the initial rate is applied then). */
  lastEpoch: number;
  baseLrs: number[];
  private lastLr: number[] = [];

  constructor(optimizer: Optimizer, options: { lastEpoch?: number } = {}) {
    this.optimizer = optimizer;
    const lastEpoch = options.lastEpoch ?? -1;
    if (!Number.isInteger(lastEpoch) || lastEpoch < -1) {
      throw new RangeError(`${this.constructor.name}: lastEpoch must be an integer >= -1; got ${lastEpoch}`);
    }
    // As in PyTorch, the base rate of a group is remembered as `initialLr` so that a scheduler
    // created to resume (lastEpoch >= 0) computes from the original rate, not the decayed one.
    optimizer.paramGroups.forEach((g, i) => {
      if (lastEpoch === -1) g.initialLr ??= g.lr;
      else if (typeof g.initialLr !== "number") {
        throw new RangeError(`${this.constructor.name}: param group ${i} has no initialLr, needed to resume with lastEpoch ${lastEpoch}`);
      }
    });
    this.baseLrs = optimizer.paramGroups.map((g) => g.initialLr as number);
    this.lastEpoch = lastEpoch;
  }

  /**
   * Subclasses call this at the end of their constructor (after their own fields exist), as
   * PyTorch's `_initial_step`: it moves to step lastEpoch + 1 and applies that rate.
   */
  protected initialStep(): void {
    this.step();
  }

  /** The rate of group `i` at step `epoch`. */
  protected abstract lrAt(epoch: number, baseLr: number, group: number): number;

  step(): void {
    this.lastEpoch++;
    this.lastLr = this.baseLrs.map((b, i) => this.lrAt(this.lastEpoch, b, i));
    this.optimizer.paramGroups.forEach((g, i) => (g.lr = this.lastLr[i]));
  }

  /** The rates the last `step()` applied, one per param group. */
  getLastLr(): number[] {
    return [...this.lastLr];
  }

  stateDict(): SchedulerStateDict {
    return { last_epoch: this.lastEpoch, base_lrs: [...this.baseLrs], last_lr: [...this.lastLr] };
  }

  /** Restores the position; the optimizer's rates come back with the optimizer's own state dict. */
  loadStateDict(sd: SchedulerStateDict): void {
    const n = this.optimizer.paramGroups.length;
    if (!sd || !Number.isInteger(sd.last_epoch) || !Array.isArray(sd.base_lrs) || sd.base_lrs.length !== n) {
      throw new RangeError(
        `${this.constructor.name}.loadStateDict: expected { last_epoch, base_lrs (${n} values), last_lr }; got ${JSON.stringify(sd)}`,
      );
    }
    this.lastEpoch = sd.last_epoch;
    this.baseLrs = [...sd.base_lrs];
    this.lastLr = Array.isArray(sd.last_lr) ? [...sd.last_lr] : this.baseLrs.map((b, i) => this.lrAt(this.lastEpoch, b, i));
  }
}

export interface CosineWithWarmupOptions {
  /** Steps of linear warmup from 0 to the base rate. */
  readonly warmupSteps: number;
  /** Step at which the cosine reaches its floor; the rate stays there afterwards. */
  readonly totalSteps: number;
  /** Floor as a fraction of the base rate (default 0). */
  readonly minLrRatio?: number;
  readonly lastEpoch?: number;
}

/**
 * Linear warmup then cosine decay (the schedule of GPT training runs):
 * step < warmup: base·step/warmup; then base·(m + (1-m)·½(1 + cos(π·progress))), progress going 0 -> 1
 * between warmupSteps and totalSteps; base·m after totalSteps.
 */
export class CosineWithWarmup extends LRScheduler {
  readonly warmupSteps: number;
  readonly totalSteps: number;
  readonly minLrRatio: number;

  constructor(optimizer: Optimizer, options: CosineWithWarmupOptions) {
    super(optimizer, { lastEpoch: options.lastEpoch });
    this.warmupSteps = checkNonNegativeInt("CosineWithWarmup", "warmupSteps", options.warmupSteps);
    this.totalSteps = checkPositiveInt("CosineWithWarmup", "totalSteps", options.totalSteps);
    if (this.totalSteps < this.warmupSteps) {
      throw new RangeError(`CosineWithWarmup: totalSteps (${this.totalSteps}) must be >= warmupSteps (${this.warmupSteps})`);
    }
    this.minLrRatio = checkRange("CosineWithWarmup", "minLrRatio", options.minLrRatio ?? 0, 0, 1, true);
    this.initialStep();
  }

  protected lrAt(epoch: number, base: number): number {
    if (epoch < this.warmupSteps) return (base * epoch) / this.warmupSteps;
    if (epoch >= this.totalSteps) return base * this.minLrRatio;
    const progress = (epoch - this.warmupSteps) / (this.totalSteps - this.warmupSteps);
    return base * (this.minLrRatio + (1 - this.minLrRatio) * 0.5 * (1 + Math.cos(Math.PI * progress)));
  }
}

/** lr = base · lambda(step), one lambda for all groups or one per group. */
export class LambdaLR extends LRScheduler {
  private readonly lambdas: Array<(step: number) => number>;

  constructor(optimizer: Optimizer, lrLambda: ((step: number) => number) | Array<(step: number) => number>, options: { lastEpoch?: number } = {}) {
    super(optimizer, options);
    const n = optimizer.paramGroups.length;
    this.lambdas = Array.isArray(lrLambda) ? lrLambda : Array.from({ length: n }, () => lrLambda);
    if (this.lambdas.length !== n || this.lambdas.some((f) => typeof f !== "function")) {
      throw new RangeError(`LambdaLR: lrLambda must be a function or ${n} functions (one per param group)`);
    }
    this.initialStep();
  }

  protected lrAt(epoch: number, base: number, group: number): number {
    return base * this.lambdas[group](epoch);
  }
}

/** lr = base · gamma^floor(step / stepSize). */
export class StepLR extends LRScheduler {
  readonly stepSize: number;
  readonly gamma: number;

  constructor(optimizer: Optimizer, options: { stepSize: number; gamma?: number; lastEpoch?: number }) {
    super(optimizer, { lastEpoch: options.lastEpoch });
    this.stepSize = checkPositiveInt("StepLR", "stepSize", options.stepSize);
    this.gamma = checkNonNegative("StepLR", "gamma", options.gamma ?? 0.1);
    this.initialStep();
  }

  protected lrAt(epoch: number, base: number): number {
    return base * this.gamma ** Math.floor(epoch / this.stepSize);
  }
}
