import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it, onTestFinished } from "vitest";
import { StrategyRegistry } from "@fulgur/core";
import { FullCheckpointIO } from "@fulgur/checkpoint-io";
import { type Callback, DataLoader, ModelCheckpoint, TextDataset, Trainer, type TrainingModule } from "@fulgur/trainer";
import { GPTLanguageModel } from "@fulgur/trainer/demos";
import "../src/index";

const config = { dModel: 16, nLayers: 1, nHeads: 2, seqLen: 8, vocabSize: 256 } as const;
const data = () => new DataLoader(TextDataset.fromText("a third party strategy, used by name. ".repeat(40), { seqLen: 8 }), { batchSize: 4, shuffle: false });

class Recorder implements Callback {
  losses: number[] = [];
  weights: number[][] = [];
  onTrainBatchEnd(_t: Trainer, m: TrainingModule, loss: number): void {
    this.losses.push(loss);
    this.weights.push(m.getParameter("model.lnf.bias").toArray());
  }
}

describe("a third-party strategy registered by name", () => {
  it("is listed with its package and description", () => {
    const entry = StrategyRegistry.get("ema_single_device");
    expect(entry.package).toBe("fulgur-custom-strategy-example");
    expect(entry.defaults).toEqual({ decay: 0.9 });
  });

  it("trains like single_device and checkpoints the moving average of the weights", async () => {
    const dir = mkdtempSync(join(tmpdir(), "fulgur-ema-"));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const run = async (strategy: string, cbs: Callback[]): Promise<Recorder> => {
      const rec = new Recorder();
      await new Trainer({ strategy, strategyOptions: strategy === "ema_single_device" ? { decay: 0.5 } : {}, maxSteps: 5, logEveryNSteps: 1, logger: false, enableProgressBar: false, enableCheckpointing: false, callbacks: [rec, ...cbs] }).fit(
        new GPTLanguageModel({ config, lr: 1e-2 }),
        data(),
      );
      return rec;
    };
    const plain = await run("single_device", []);
    const ckpt = new ModelCheckpoint({ dirpath: dir, everyNTrainSteps: 5, saveTopK: 1 });
    const ema = await run("ema_single_device", [ckpt]);
    ema.losses.forEach((l, i) => expect(l).toBeCloseTo(plain.losses[i], 6));
    // ema_0 = w_0 (initial lnf.bias is zeros); ema_k = 0.5 ema_{k-1} + 0.5 w_k
    let expected = ema.weights[0].map(() => 0);
    for (const w of ema.weights) expected = expected.map((e, i) => 0.5 * e + 0.5 * w[i]);
    const saved = await new FullCheckpointIO().load(ckpt.savedPaths[0]);
    const got = saved.tensors["state_dict.model.lnf.bias"].toArray();
    got.forEach((v, i) => expect(v).toBeCloseTo(expected[i], 6));
    expect(got).not.toEqual(ema.weights.at(-1));
  });

  it("rejects bad options with the option name, value and range", () => {
    expect(() => StrategyRegistry.create("ema_single_device", { decay: 2 })).toThrow(
      'ema_single_device option "decay": got 2; expected a number in [0, 1)',
    );
  });
});
