/** Callbacks see the Trainer at fixed points of the loop (Lightning's Callback, async-capable). */
import type { Trainer } from "../trainer";
import type { TrainingModule } from "../trainingModule";

export interface Callback {
  readonly name?: string;
  onFitStart?(trainer: Trainer, module: TrainingModule): void | Promise<void>;
  onFitEnd?(trainer: Trainer, module: TrainingModule): void | Promise<void>;
  onTrainEpochStart?(trainer: Trainer, module: TrainingModule): void | Promise<void>;
  onTrainEpochEnd?(trainer: Trainer, module: TrainingModule): void | Promise<void>;
  /** After every optimizer step; `loss` is the step's loss when it was read this step, else NaN. */
  onTrainBatchEnd?(trainer: Trainer, module: TrainingModule, loss: number, batchIdx: number): void | Promise<void>;
  onValidationEnd?(trainer: Trainer, module: TrainingModule): void | Promise<void>;
  /** JSON-serialisable state saved in checkpoints under the callback's `stateKey`. */
  stateDict?(): Record<string, unknown>;
  loadStateDict?(state: Record<string, unknown>): void;
  readonly stateKey?: string;
}
