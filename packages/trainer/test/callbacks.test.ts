import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import { describe, expect, it, onTestFinished } from "vitest";
import { CSVLogger, LearningRateMonitor, ProgressBar, Trainer } from "../src";
import { GPTLanguageModel } from "../src/demos";
import { TINY, loader, tmp } from "./helpers";

function sink(): { stream: NodeJS.WriteStream; text: () => string } {
  let buf = "";
  const w = new Writable({
    write(chunk, _enc, cb) {
      buf += String(chunk);
      cb();
    },
  }) as unknown as NodeJS.WriteStream;
  return { stream: w, text: () => buf };
}

describe("callbacks and loggers", () => {
  it("the progress bar prints plain lines with step, loss, tokens/s and ETA when not on a terminal", async () => {
    const out = sink();
    await new Trainer({ maxSteps: 4, logEveryNSteps: 2, logger: false, enableCheckpointing: false, enableProgressBar: false, callbacks: [new ProgressBar(out.stream)] }).fit(
      new GPTLanguageModel({ config: TINY }),
      loader(),
    );
    const lines = out.text().trim().split("\n");
    // The first step (to show the starting loss), then every logEveryNSteps.
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/^epoch 0 step 1\/4 loss \d+\.\d{4} /);
    expect(lines[1]).toMatch(/^epoch 0 step 2\/4 loss \d+\.\d{4} [\d.]+k? tok\/s ETA \S+$/);
    expect(lines[2]).toMatch(/^epoch 0 step 4\/4 /);
  });

  it("LearningRateMonitor logs the scheduled learning rate; CSV rows follow the steps", async () => {
    const dir = tmp();
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const logger = new CSVLogger({ saveDir: dir, name: "lr" });
    await new Trainer({
      maxSteps: 4,
      logEveryNSteps: 1,
      enableProgressBar: false,
      enableCheckpointing: false,
      logger,
      callbacks: [new LearningRateMonitor()],
    }).fit(new GPTLanguageModel({ config: TINY, lr: 0.01, warmupSteps: 4, totalSteps: 8 }), loader());
    const rows = readFileSync(join(logger.logDir, "metrics.csv"), "utf8").trim().split("\n");
    const header = rows[0].split(",");
    const lr = rows.slice(1).map((r) => Number(r.split(",")[header.indexOf("lr-AdamW")]));
    // Warmup: after step k the rate is k/4 of the peak.
    expect(lr).toEqual([0.0025, 0.005, 0.0075, 0.01].map((v) => expect.closeTo(v, 10)));
  });

  it("validate() returns the epoch-averaged validation loss", async () => {
    const trainer = new Trainer({ logger: false, enableProgressBar: false, enableCheckpointing: false });
    const metrics = await trainer.validate(new GPTLanguageModel({ config: TINY }), loader({ shuffle: false }));
    expect(metrics.val_loss).toBeGreaterThan(5);
    expect(metrics.val_loss).toBeLessThan(6.5);
  });
});

describe("the progress bar's loss", () => {
  // With several ranks the Trainer's loss is rank 0's; a module that logs "loss" with
  // `{ syncDist: true, progBar: true }` gets the mean over ranks shown instead.
  function line(progressBarMetrics: Record<string, number>): string {
    const out = sink();
    const trainer = { isGlobalZero: true, globalStep: 1, startStep: 0, currentEpoch: 0, tokensPerSecond: 0, progressBarMetrics, estimatedStepping: () => 4 };
    const bar = new ProgressBar(out.stream);
    bar.onFitStart(trainer as unknown as Trainer);
    bar.onTrainBatchEnd(trainer as unknown as Trainer, undefined, 2.5);
    return out.text();
  }

  it("is the module's logged 'loss' when there is one (the mean over ranks with syncDist)", () => {
    expect(line({ loss: 2.25 })).toMatch(/^epoch 0 step 1\/4 loss 2\.2500 - tok\/s ETA /);
  });

  it("is the Trainer's loss otherwise", () => {
    expect(line({})).toMatch(/^epoch 0 step 1\/4 loss 2\.5000 - tok\/s ETA /);
  });
});
