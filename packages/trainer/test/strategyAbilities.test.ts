/**
 * The Trainer's side of the strategy contract (DESIGN.md decision 13): each optional ability is
 * used when a strategy has it and falls back to single-device behaviour when it does not; plugins
 * are chosen as objects; minSteps and the scheduler's frequency are honoured; a non-finite loss
 * stops training naming the step.
 */
import { describe, expect, it } from "vitest";
import type { BatchContext, CheckpointIO, OptimizerState } from "@fulgur/core";
import { FullCheckpointIO } from "@fulgur/checkpoint-io";
import { type Module, type Optimizer, SGD, StepLR } from "@fulgur/nn";
import { SingleDeviceStrategy, createPrecision } from "@fulgur/strategy-kit";
import { type Tensor, withDevice } from "@fulgur/tensor";
import { type Callback, NonFiniteLossError, Trainer, type TrainingModule } from "../src";
import { GPTLanguageModel } from "../src/demos";
import { TINY, loader, tmp } from "./helpers";

const quiet = { enableProgressBar: false, logEveryNSteps: 1, logger: false, enableCheckpointing: false } as const;

class Recorder implements Callback {
  losses: number[] = [];
  lrs: number[] = [];
  onTrainBatchEnd(t: Trainer, _m: TrainingModule, loss: number): void {
    this.losses.push(loss);
    this.lrs.push(t.optimizer!.paramGroups[0].lr as number);
  }
}

/** single_device with every optional ability, counting what the Trainer asked of it. */
class Abilities extends SingleDeviceStrategy {
  override readonly name = "abilities";
  readonly calls: string[] = [];
  readonly dataParallelRank = 0;
  readonly dataParallelSize = 1;
  async buildModule(_module: Module, configure: () => void): Promise<void> {
    this.calls.push("buildModule");
    withDevice(this.rootDevice, configure);
  }
  runBatch(ctx: BatchContext): Tensor {
    this.calls.push(`runBatch:${ctx.lossDivisor}:${ctx.syncGradients}`);
    const loss = ctx.trainingStep(ctx.batch);
    this.backward(ctx.lossDivisor > 1 ? loss.div(ctx.lossDivisor) : loss);
    return loss;
  }
  async optimizerStateDict(optimizer: Optimizer): Promise<OptimizerState> {
    this.calls.push("optimizerStateDict");
    return { tensors: {}, meta: { format: "fulgur-optimizer", version: 2, state: {}, param_groups: optimizer.paramGroups.map(() => ({ params: [] })) } };
  }
  async loadOptimizerStateDict(): Promise<void> {
    this.calls.push("loadOptimizerStateDict");
  }
}

describe("what a strategy may read from the Trainer", () => {
  it("the loader fit trains on is trainer.trainDataloader before the strategy sets the module up", async () => {
    const seen: (number | null)[] = [];
    class Reader extends SingleDeviceStrategy {
      override readonly name = "reader";
      override async setupModule(module: Module): Promise<Module> {
        seen.push((module as unknown as TrainingModule).trainer?.trainDataloader?.batchSize ?? null);
        return super.setupModule(module);
      }
    }
    const train = loader({ batchSize: 3 });
    const trainer = new Trainer({ ...quiet, strategy: new Reader(), maxSteps: 1 });
    expect(trainer.trainDataloader).toBeNull();
    await trainer.fit(new GPTLanguageModel({ config: TINY, lr: 1e-2 }), train);
    expect(seen).toEqual([3]);
    expect(trainer.trainDataloader).toBe(train);
  });
});

describe("optional abilities", () => {
  it("are used when present: the strategy builds the module, runs whole batches and owns optimizer state", async () => {
    const dir = tmp();
    const rec = new Recorder();
    const strategy = new Abilities();
    const trainer = new Trainer({ ...quiet, strategy, maxSteps: 3, accumulateGradBatches: 2, callbacks: [rec] });
    await trainer.fit(new GPTLanguageModel({ config: TINY, lr: 1e-2 }), loader());
    await trainer.saveCheckpoint(`${dir}/a.safetensors`);
    expect(strategy.calls.slice(0, 3)).toEqual(["buildModule", "runBatch:2:false", "runBatch:2:true"]);
    expect(strategy.calls.filter((c) => c.startsWith("runBatch"))).toHaveLength(6);
    expect(strategy.calls.at(-1)).toBe("optimizerStateDict");
    const resumed = new Abilities();
    await new Trainer({ ...quiet, strategy: resumed, maxSteps: 4, accumulateGradBatches: 2 }).fit(new GPTLanguageModel({ config: TINY, lr: 1e-2 }), loader(), null, {
      ckptPath: `${dir}/a.safetensors`,
    });
    expect(resumed.calls).toContain("loadOptimizerStateDict");
    // Same losses as the Trainer's own loop.
    const plain = new Recorder();
    await new Trainer({ ...quiet, maxSteps: 3, accumulateGradBatches: 2, callbacks: [plain] }).fit(new GPTLanguageModel({ config: TINY, lr: 1e-2 }), loader());
    expect(rec.losses).toEqual(plain.losses);
  });

  it("the checkpoint IO comes from plugins, and a precision object is used as given", async () => {
    const saved: string[] = [];
    const full = new FullCheckpointIO();
    const io: CheckpointIO = {
      contractVersion: full.contractVersion,
      name: "recording",
      save: async (c, p) => {
        saved.push(p);
        await full.save(c, p);
      },
      load: (p, o) => full.load(p, o),
      remove: (p) => full.remove(p),
    };
    const precision = createPrecision("bf16-mixed");
    const dir = tmp();
    const trainer = new Trainer({ ...quiet, enableCheckpointing: true, maxSteps: 2, plugins: [io], precision, defaultRootDir: dir });
    await trainer.fit(new GPTLanguageModel({ config: TINY }), loader());
    expect(trainer.precision).toBe(precision);
    expect(trainer.checkpointIO).toBe(io);
    expect(saved.some((p) => p.endsWith("last.safetensors"))).toBe(true);
    const meta = (await full.load(saved.at(-1)!)).meta as { hparams: { trainer: { precision: string; plugins: string[] } } };
    expect(meta.hparams.trainer).toMatchObject({ precision: "bf16-mixed", plugins: ["recording"] });
    expect(() => new Trainer({ plugins: [{ name: "nothing" }] as never })).toThrow(/plugins\[0\]: a Object is not a Precision, CheckpointIO or ClusterEnvironment/);
    expect(() => new Trainer({ plugins: [createPrecision("32-true")], precision: "bf16-mixed" })).toThrow(/give it once/);
  });
});

describe("options the Trainer used to accept and ignore", () => {
  it("minSteps holds off a stop asked for by a callback", async () => {
    const stopAtOnce: Callback = { onTrainBatchEnd: (t: Trainer) => void (t.shouldStop = true) };
    const t = new Trainer({ ...quiet, maxSteps: 10, minSteps: 4, callbacks: [stopAtOnce] });
    await t.fit(new GPTLanguageModel({ config: TINY }), loader());
    expect(t.globalStep).toBe(4);
  });

  it("the scheduler's frequency steps it every k optimizer steps", async () => {
    class Scheduled extends GPTLanguageModel {
      override configureOptimizers() {
        const optimizer = new SGD(this.parameters(), { lr: 1 });
        return { optimizer, lrScheduler: { scheduler: new StepLR(optimizer, { stepSize: 1, gamma: 0.5 }), interval: "step" as const, frequency: 2 } };
      }
    }
    const rec = new Recorder();
    await new Trainer({ ...quiet, maxSteps: 5, callbacks: [rec] }).fit(new Scheduled({ config: TINY }), loader());
    expect(rec.lrs).toEqual([1, 0.5, 0.5, 0.25, 0.25]);
  });
});

describe("a loss that is not finite", () => {
  class Diverging extends GPTLanguageModel {
    override trainingStep(batch: Tensor): Tensor {
      const loss = super.trainingStep(batch);
      return this.globalStep === 2 ? loss.mul(Number.NaN) : loss;
    }
  }

  it("stops training with a message naming the step", async () => {
    const t = new Trainer({ ...quiet, maxSteps: 6 });
    const err = await t.fit(new Diverging({ config: TINY }), loader()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NonFiniteLossError);
    expect((err as Error).message).toMatch(/^the training loss is NaN at step 3: training stopped/);
  });

  it("trains on when told to, and detectAnomaly names the step before backward", async () => {
    const t = new Trainer({ ...quiet, maxSteps: 4, stopOnNonFiniteLoss: false });
    await t.fit(new Diverging({ config: TINY }), loader());
    expect(t.globalStep).toBe(4);
    const d = new Trainer({ ...quiet, maxSteps: 4, detectAnomaly: true });
    await expect(d.fit(new Diverging({ config: TINY }), loader())).rejects.toThrow("detectAnomaly: the loss is NaN at step 3 (batch 2 of epoch 0), before backward");
  });
});
