/**
 * What a user writes: a Module that knows how to train itself (Lightning's LightningModule).
 * `configureModel` builds the network inside the strategy's context (so a sharding strategy can
 * place it as it is built), `trainingStep` returns the loss, `configureOptimizers` the optimizer.
 */
import { Module, type LRScheduler, type Optimizer } from "@fulgur/nn";
import type { Tensor } from "@fulgur/tensor";
import type { Trainer } from "./trainer";

export interface LogOptions {
  /** Show on the progress bar (default false). */
  progBar?: boolean;
  /** Reduce (mean) across ranks before logging (default false). */
  syncDist?: boolean;
  /** Log the value of this step (default true in training, false in validation). */
  onStep?: boolean;
  /** Log the mean over the epoch (default false in training, true in validation). */
  onEpoch?: boolean;
}

export interface SchedulerConfig {
  scheduler: LRScheduler;
  /** Step the scheduler after every optimizer step ("step", the default) or every epoch. */
  interval?: "step" | "epoch";
  frequency?: number;
}

export type OptimizerConfig = Optimizer | { optimizer: Optimizer; lrScheduler?: LRScheduler | SchedulerConfig };

export type StepOutput = Tensor | { loss: Tensor; [key: string]: unknown };

/** A logged value waiting to be read: tensors are read in batches so the device is not stalled each step. */
export interface PendingLog {
  readonly name: string;
  readonly value: number | Tensor;
  readonly options: Required<LogOptions>;
}

export abstract class TrainingModule extends Module {
  /** Set by the Trainer during fit/validate. */
  trainer: Trainer | null = null;
  /** @internal Values logged since the Trainer last collected them. */
  pendingLogs: PendingLog[] = [];
  /** @internal "train" or "validate": decides the onStep/onEpoch defaults of `log`. */
  stage: "train" | "validate" = "train";

  /** Builds the network (called once, before the strategy sets the module up). */
  configureModel(): void {}

  abstract trainingStep(batch: any, batchIdx: number): StepOutput;

  validationStep(_batch: any, _batchIdx: number): StepOutput | void {
    return undefined;
  }

  abstract configureOptimizers(): OptimizerConfig;

  /** Records a metric for the loggers (and the progress bar when `progBar`). */
  log(name: string, value: number | Tensor, options: LogOptions = {}): void {
    if (typeof name !== "string" || name === "") throw new TypeError(`log: name must be a non-empty string, got ${JSON.stringify(name)}`);
    if (typeof value !== "number" && (typeof value !== "object" || value === null || typeof value.item !== "function")) {
      throw new TypeError(`log("${name}"): value must be a number or a single-element tensor`);
    }
    if (typeof value === "object" && value.numel !== 1) {
      throw new TypeError(`log("${name}"): value must be a single-element tensor, got shape [${value.shape.join(", ")}]`);
    }
    const training = this.stage === "train";
    const full: Required<LogOptions> = {
      progBar: options.progBar ?? false,
      syncDist: options.syncDist ?? false,
      onStep: options.onStep ?? training,
      onEpoch: options.onEpoch ?? !training,
    };
    this.pendingLogs.push({ name, value: typeof value === "number" ? value : value.detach().keep(), options: full });
  }

  /** The network has no forward of its own unless the user gives it one. */
  forward(..._args: unknown[]): unknown {
    throw new Error(`${this.constructor.name}.forward is not defined; call your model from trainingStep`);
  }

  get globalStep(): number {
    return this.trainer?.globalStep ?? 0;
  }

  get currentEpoch(): number {
    return this.trainer?.currentEpoch ?? 0;
  }

  /** The device the strategy placed the module on. */
  get device(): string {
    return this.trainer?.strategy?.rootDevice ?? "cpu";
  }

  // Hooks, in the order they run. All optional.
  onFitStart(): void | Promise<void> {}
  onFitEnd(): void | Promise<void> {}
  onTrainEpochStart(): void {}
  onTrainEpochEnd(): void {}
  onTrainBatchStart(_batch: unknown, _batchIdx: number): void {}
  onTrainBatchEnd(_output: number, _batch: unknown, _batchIdx: number): void {}
  onValidationEpochStart(): void {}
  onValidationEpochEnd(): void {}
  onBeforeOptimizerStep(_optimizer: Optimizer): void {}
  /** Add anything JSON-serialisable to the checkpoint's `meta`. */
  onSaveCheckpoint(_meta: Record<string, unknown>): void {}
  onLoadCheckpoint(_meta: Record<string, unknown>): void {}
}
