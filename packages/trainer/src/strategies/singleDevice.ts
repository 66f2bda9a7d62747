/** The `single_device` strategy: one process, one device, no communication. */
import {
  CONTRACT_VERSION,
  type Checkpoint,
  type OptimizerStepOptions,
  type OptimizerStepResult,
  type ReduceOp,
  type Strategy,
  type StrategyContext,
} from "@fulgur/core";
import { type Module, type Optimizer, clipGradNorm, clipGradValue } from "@fulgur/nn";
import { type Tensor, normalizeDevice } from "@fulgur/tensor";

export interface SingleDeviceOptions {
  /** Defaults to the accelerator's first device. */
  device?: string;
}

/**
 * Unscale (fp16), clip, step and zero the gradients: the optimizer step every strategy that keeps
 * whole gradients on each rank needs once those gradients are final.
 */
export function precisionAwareStep(context: StrategyContext, optimizer: Optimizer, options: OptimizerStepOptions): OptimizerStepResult {
  const finite = context.precision.unscaleGradients(optimizer);
  let gradNorm: number | undefined;
  if (options.gradientClipVal !== undefined && finite) {
    const params = optimizer.paramGroups.flatMap((g) => g.params);
    if ((options.gradientClipAlgorithm ?? "norm") === "norm") gradNorm = clipGradNorm(params, options.gradientClipVal);
    else clipGradValue(params, options.gradientClipVal);
  }
  const stepped = context.precision.optimizerStep(optimizer, finite);
  optimizer.zeroGrad(true);
  return gradNorm === undefined ? { stepped } : { stepped, gradNorm };
}

export class SingleDeviceStrategy implements Strategy {
  readonly contractVersion = CONTRACT_VERSION;
  readonly name = "single_device";
  readonly globalRank = 0;
  readonly localRank = 0;
  readonly worldSize = 1;
  readonly isGlobalZero = true;
  private device: string | null;
  private context: StrategyContext | null = null;

  constructor(options: SingleDeviceOptions = {}) {
    this.device = options.device ? normalizeDevice(options.device) : null;
  }

  get rootDevice(): string {
    return this.device ?? "cpu";
  }

  private ctx(): StrategyContext {
    if (!this.context) throw new Error("single_device: setup() must run before training");
    return this.context;
  }

  async setup(context: StrategyContext): Promise<void> {
    this.context = context;
    this.device ??= context.accelerator.deviceFor(0);
    await context.accelerator.setupDevice(this.device);
  }

  async setupModule(module: Module): Promise<Module> {
    module.to(this.rootDevice);
    return module;
  }

  async setupOptimizer(optimizer: Optimizer): Promise<Optimizer> {
    return optimizer;
  }

  backward(loss: Tensor): void {
    this.ctx().precision.backward(loss);
  }

  async optimizerStep(optimizer: Optimizer, options: OptimizerStepOptions): Promise<OptimizerStepResult> {
    return precisionAwareStep(this.ctx(), optimizer, options);
  }

  async reduce(value: number, _op?: ReduceOp): Promise<number> {
    return value;
  }

  async barrier(): Promise<void> {}

  async broadcast<T>(value: T): Promise<T> {
    return value;
  }

  async moduleStateDict(module: Module): Promise<Record<string, Tensor>> {
    return module.stateDict();
  }

  async loadModuleStateDict(module: Module, state: Record<string, Tensor>): Promise<void> {
    module.loadStateDict(state);
  }

  async saveCheckpoint(checkpoint: Checkpoint, path: string): Promise<void> {
    await this.ctx().checkpointIO.save(checkpoint, path);
  }

  async loadCheckpoint(path: string): Promise<Checkpoint> {
    return this.ctx().checkpointIO.load(path, { device: this.rootDevice });
  }

  async teardown(): Promise<void> {}
}
