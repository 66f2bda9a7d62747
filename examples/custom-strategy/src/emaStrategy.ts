/**
 * `ema_single_device`: single-device training that also keeps an exponential moving average of
 * the weights (ema = decay * ema + (1 - decay) * w after every optimizer step) and saves the
 * averaged weights in checkpoints, which usually evaluate better than the raw ones.
 *
 * Written as a third party would: it implements the Strategy contract of @fulgur/core directly
 * (checked by shape, not by class) and depends on nothing from the Trainer.
 */
import {
  CONTRACT_VERSION,
  type Checkpoint,
  type OptimizerStepOptions,
  type OptimizerStepResult,
  type Strategy,
  type StrategyContext,
} from "@fulgur/core";
import { type Module, type Optimizer, clipGradNorm, clipGradValue } from "@fulgur/nn";
import { type Tensor, noGrad, scope } from "@fulgur/tensor";

export interface EmaOptions {
  /** Weight of the old average per step, in [0, 1). */
  decay?: number;
}

export class EmaSingleDeviceStrategy implements Strategy {
  readonly contractVersion = CONTRACT_VERSION;
  readonly name = "ema_single_device";
  readonly globalRank = 0;
  readonly localRank = 0;
  readonly worldSize = 1;
  readonly isGlobalZero = true;
  readonly decay: number;
  rootDevice = "cpu";
  private context: StrategyContext | null = null;
  private module: Module | null = null;
  /** Averaged copy of every parameter, by name. */
  readonly ema = new Map<string, Tensor>();

  constructor(options: EmaOptions = {}) {
    const decay = options.decay ?? 0.9;
    if (typeof decay !== "number" || !(decay >= 0 && decay < 1)) {
      throw new RangeError(`ema_single_device option "decay": got ${JSON.stringify(decay)}; expected a number in [0, 1)`);
    }
    this.decay = decay;
  }

  async setup(context: StrategyContext): Promise<void> {
    this.context = context;
    this.rootDevice = context.accelerator.deviceFor(0);
    await context.accelerator.setupDevice(this.rootDevice);
  }

  async setupModule(module: Module): Promise<Module> {
    module.to(this.rootDevice);
    this.module = module;
    noGrad(() => {
      for (const [name, p] of module.namedParameters()) this.ema.set(name, p.clone().untrack());
    });
    return module;
  }

  async setupOptimizer(optimizer: Optimizer): Promise<Optimizer> {
    return optimizer;
  }

  backward(loss: Tensor): void {
    this.context!.precision.backward(loss);
  }

  async optimizerStep(optimizer: Optimizer, options: OptimizerStepOptions): Promise<OptimizerStepResult> {
    const { precision } = this.context!;
    const finite = precision.unscaleGradients(optimizer);
    const params = optimizer.paramGroups.flatMap((g) => g.params);
    let gradNorm: number | undefined;
    if (options.gradientClipVal !== undefined && finite) {
      if ((options.gradientClipAlgorithm ?? "norm") === "norm") gradNorm = clipGradNorm(params, options.gradientClipVal);
      else clipGradValue(params, options.gradientClipVal);
    }
    const stepped = precision.optimizerStep(optimizer, finite);
    optimizer.zeroGrad(true);
    if (stepped) this.updateEma();
    return gradNorm === undefined ? { stepped } : { stepped, gradNorm };
  }

  private updateEma(): void {
    noGrad(() =>
      scope(() => {
        for (const [name, p] of this.module!.namedParameters()) {
          const avg = this.ema.get(name)!;
          avg.mul_(this.decay).add_(p, 1 - this.decay);
        }
      }),
    );
  }

  async reduce(value: number): Promise<number> {
    return value;
  }
  async barrier(): Promise<void> {}
  async broadcast<T>(value: T): Promise<T> {
    return value;
  }

  /** Checkpoints hold the averaged weights (and the buffers as they are). */
  async moduleStateDict(module: Module): Promise<Record<string, Tensor>> {
    const state = module.stateDict();
    for (const [name, avg] of this.ema) state[name] = avg;
    return state;
  }

  async loadModuleStateDict(module: Module, state: Record<string, Tensor>): Promise<void> {
    module.loadStateDict(state);
    noGrad(() => {
      for (const [name, avg] of this.ema) if (state[name]) avg.copy_(state[name]);
    });
  }

  async saveCheckpoint(checkpoint: Checkpoint, path: string): Promise<void> {
    await this.context!.checkpointIO.save(checkpoint, path);
  }

  async loadCheckpoint(path: string): Promise<Checkpoint> {
    return this.context!.checkpointIO.load(path, { device: this.rootDevice });
  }

  async teardown(): Promise<void> {
    for (const t of this.ema.values()) t.dispose();
    this.ema.clear();
  }
}
