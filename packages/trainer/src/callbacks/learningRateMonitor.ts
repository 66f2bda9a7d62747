/** Logs the learning rate of every parameter group as `lr-<Optimizer>[/pg<i>]` each logging step. */
import type { Callback } from "./callback";
import type { Trainer } from "../trainer";

export class LearningRateMonitor implements Callback {
  readonly name = "LearningRateMonitor";

  onTrainBatchEnd(trainer: Trainer): void {
    const opt = trainer.optimizer;
    if (!opt || trainer.globalStep % trainer.options.logEveryNSteps !== 0) return;
    const groups = opt.paramGroups;
    const base = `lr-${opt.constructor.name}`;
    groups.forEach((g, i) => trainer.logMetric(groups.length === 1 ? base : `${base}/pg${i + 1}`, g.lr));
  }
}
