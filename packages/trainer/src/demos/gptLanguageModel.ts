/**
 * A ready-made TrainingModule for next-token prediction with the reference GPT (Lightning ships a
 * similar demo transformer). Batches are int32 [B, T + 1] blocks of tokens: inputs are the first T,
 * targets the last T. Used by the demo, `fulgur fit`, `fulgur bench` and the tests.
 */
import { AdamW, CosineWithWarmup, GPT, type GPTConfig, type GPTConfigName } from "@fulgur/nn";
import type { Tensor } from "@fulgur/tensor";
import { type OptimizerConfig, TrainingModule } from "../trainingModule";

export interface GPTLanguageModelOptions {
  config: GPTConfig | GPTConfigName;
  lr?: number;
  weightDecay?: number;
  betas?: [number, number];
  /** Linear warmup then cosine decay over `totalSteps` (both optimizer steps); no schedule when absent. */
  warmupSteps?: number;
  totalSteps?: number;
  minLrRatio?: number;
  /** Seed of the initial weights (default 0). */
  seed?: number;
}

export class GPTLanguageModel extends TrainingModule {
  model: GPT | null = null;

  constructor(readonly hp: GPTLanguageModelOptions) {
    super();
  }

  override configureModel(): void {
    if (this.model) return;
    this.model = this.registerModule("model", new GPT(this.hp.config, { seed: this.hp.seed ?? 0 }));
  }

  private split(batch: Tensor): [Tensor, Tensor] {
    const t = batch.shape[1] - 1;
    return [batch.slice(1, 0, t).contiguous(), batch.slice(1, 1, t + 1).contiguous()];
  }

  trainingStep(batch: Tensor): Tensor {
    const [x, y] = this.split(batch);
    return this.model!.loss(x, y);
  }

  override validationStep(batch: Tensor): Tensor {
    const [x, y] = this.split(batch);
    const loss = this.model!.loss(x, y);
    this.log("val_loss", loss, { progBar: true, syncDist: true });
    return loss;
  }

  configureOptimizers(): OptimizerConfig {
    const optimizer = new AdamW(this.model!.parameters(), {
      lr: this.hp.lr ?? 3e-3,
      weightDecay: this.hp.weightDecay ?? 0.1,
      betas: this.hp.betas ?? [0.9, 0.95],
    });
    if (this.hp.totalSteps === undefined) return optimizer;
    const scheduler = new CosineWithWarmup(optimizer, {
      warmupSteps: this.hp.warmupSteps ?? 0,
      totalSteps: this.hp.totalSteps,
      minLrRatio: this.hp.minLrRatio ?? 0.1,
    });
    return { optimizer, lrScheduler: { scheduler, interval: "step" } };
  }
}
