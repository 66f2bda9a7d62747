/**
 * `ema_single_device`: single-device training that also keeps an exponential moving average of
 * the weights (ema = decay * ema + (1 - decay) * w after every optimizer step) and saves the
 * averaged weights in checkpoints, which usually evaluate better than the raw ones.
 *
 * Written as a third party would, on @fulgur/strategy-kit: everything but the average is the
 * kit's single-device behaviour, so the strategy overrides five members.
 */
import type { OptimizerStepOptions, OptimizerStepResult } from "@fulgur/core";
import type { Module, Optimizer } from "@fulgur/nn";
import { SingleDeviceStrategy } from "@fulgur/strategy-kit";
import { type Tensor, noGrad, scope } from "@fulgur/tensor";

export interface EmaOptions {
  /** Weight of the old average per step, in [0, 1). */
  decay?: number;
}

export class EmaSingleDeviceStrategy extends SingleDeviceStrategy {
  override readonly name = "ema_single_device";
  readonly decay: number;
  /** Averaged copy of every parameter, by name. */
  readonly ema = new Map<string, Tensor>();
  private module: Module | null = null;

  constructor(options: EmaOptions = {}) {
    super();
    const decay = options.decay ?? 0.9;
    if (typeof decay !== "number" || !(decay >= 0 && decay < 1)) {
      throw new RangeError(`ema_single_device option "decay": got ${JSON.stringify(decay)}; expected a number in [0, 1)`);
    }
    this.decay = decay;
  }

  override async setupModule(module: Module): Promise<Module> {
    this.module = await super.setupModule(module);
    noGrad(() => {
      for (const [name, p] of module.namedParameters()) this.ema.set(name, p.clone().untrack());
    });
    return module;
  }

  override async optimizerStep(optimizer: Optimizer, options: OptimizerStepOptions): Promise<OptimizerStepResult> {
    const result = await super.optimizerStep(optimizer, options);
    if (result.stepped) {
      noGrad(() => scope(() => this.module!.namedParameters().forEach(([n, p]) => this.ema.get(n)!.mul_(this.decay).add_(p, 1 - this.decay))));
    }
    return result;
  }

  /** Checkpoints hold the averaged weights (and the buffers as they are). */
  override async moduleStateDict(module: Module): Promise<Record<string, Tensor>> {
    return { ...module.stateDict(), ...Object.fromEntries(this.ema) };
  }

  /** Resuming restores the average too (the checkpoint holds it as the weights). */
  override async loadModuleStateDict(module: Module, state: Record<string, Tensor>): Promise<void> {
    module.loadStateDict(state);
    noGrad(() => this.ema.forEach((avg, name) => state[name] && avg.copy_(state[name])));
  }

  override async teardown(): Promise<void> {
    for (const t of this.ema.values()) t.dispose();
    this.ema.clear();
  }
}
