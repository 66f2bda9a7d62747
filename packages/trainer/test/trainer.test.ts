import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { memoryStats } from "@fulgur/tensor";
import { CONTRACT_VERSION } from "@fulgur/core";
import { type Callback, CpuAccelerator, CSVLogger, EarlyStopping, JSONLinesLogger, ModelCheckpoint, Trainer, TrainingModule } from "../src";
import { GPTLanguageModel } from "../src/demos";
import { TINY, loader, tmp } from "./helpers";

class LossRecorder implements Callback {
  losses: number[] = [];
  onTrainBatchEnd(_t: Trainer, _m: TrainingModule, loss: number): void {
    this.losses.push(loss);
  }
}

const quiet = { enableProgressBar: false, logEveryNSteps: 1 } as const;

describe("Trainer.fit on CPU", () => {
  it("trains the GPT: the loss falls, metrics are logged as CSV and JSON lines, checkpoints are written", async () => {
    const dir = tmp();
    const rec = new LossRecorder();
    const trainer = new Trainer({
      ...quiet,
      maxSteps: 25,
      defaultRootDir: dir,
      callbacks: [rec],
      logger: [new CSVLogger({ saveDir: dir }), new JSONLinesLogger({ saveDir: dir, name: "jsonl" })],
    });
    await trainer.fit(new GPTLanguageModel({ config: TINY, lr: 1e-2 }), loader());
    expect(trainer.globalStep).toBe(25);
    expect(rec.losses).toHaveLength(25);
    expect(rec.losses[0]).toBeGreaterThan(5);
    expect(rec.losses.at(-1)!).toBeLessThan(rec.losses[0] - 1.5);
    const csv = readFileSync(join(dir, "fulgur_logs", "version_0", "metrics.csv"), "utf8").trim().split("\n");
    expect(csv[0].split(",")).toEqual(expect.arrayContaining(["step", "train_loss", "epoch"]));
    expect(csv.length).toBeGreaterThanOrEqual(26);
    const jsonl = readFileSync(join(dir, "jsonl", "version_0", "metrics.jsonl"), "utf8").trim().split("\n").map((l) => JSON.parse(l));
    expect(jsonl[0]).toMatchObject({ step: 1 });
    expect(existsSync(join(dir, "fulgur_logs", "version_0", "checkpoints", "last.safetensors"))).toBe(true);
  });

  it("gradient accumulation of 2 x batch 4 gives the losses of batch 8", async () => {
    const run = async (batchSize: number, accumulateGradBatches: number): Promise<number[]> => {
      const rec = new LossRecorder();
      const t = new Trainer({ ...quiet, maxSteps: 4, logger: false, enableCheckpointing: false, callbacks: [rec], accumulateGradBatches });
      await t.fit(new GPTLanguageModel({ config: TINY, lr: 1e-2 }), loader({ batchSize, shuffle: false }));
      return rec.losses;
    };
    const big = await run(8, 1);
    const acc = await run(4, 2);
    acc.forEach((l, i) => expect(l).toBeCloseTo(big[i], 4));
  });

  it("resuming from a checkpoint gives the same losses as never stopping (mid-epoch, with a schedule)", async () => {
    const dir = tmp();
    const hp = { config: TINY, lr: 1e-2, warmupSteps: 3, totalSteps: 12 };
    const full = new LossRecorder();
    await new Trainer({ ...quiet, maxSteps: 12, logger: false, enableCheckpointing: false, callbacks: [full] }).fit(
      new GPTLanguageModel(hp),
      loader(),
    );
    const first = new LossRecorder();
    const ckpt = new ModelCheckpoint({ dirpath: dir, everyNTrainSteps: 5, saveTopK: -1 });
    await new Trainer({ ...quiet, maxSteps: 5, logger: false, callbacks: [first, ckpt] }).fit(new GPTLanguageModel(hp), loader());
    expect(ckpt.savedPaths).toHaveLength(1);
    const second = new LossRecorder();
    await new Trainer({ ...quiet, maxSteps: 12, logger: false, enableCheckpointing: false, callbacks: [second] }).fit(
      new GPTLanguageModel(hp),
      loader(),
      null,
      { ckptPath: ckpt.savedPaths[0] },
    );
    const resumed = [...first.losses, ...second.losses];
    expect(resumed).toHaveLength(12);
    resumed.forEach((l, i) => expect(l).toBeCloseTo(full.losses[i], 5));
  });

  it("validation, ModelCheckpoint top-k by val_loss and EarlyStopping", async () => {
    const dir = tmp();
    const ckpt = new ModelCheckpoint({ dirpath: dir, monitor: "val_loss", saveTopK: 2, filename: "m-{step}-{val_loss:.3f}", everyNEpochs: 1 });
    const stop = new EarlyStopping({ monitor: "val_loss", patience: 1, minDelta: 10 });
    const t = new Trainer({ ...quiet, maxEpochs: 5, logger: false, callbacks: [ckpt, stop], limitTrainBatches: 3 });
    await t.fit(new GPTLanguageModel({ config: TINY, lr: 1e-2 }), loader(), loader({ shuffle: false }));
    // minDelta 10 can never be met: the first check sets best, the second stops.
    expect(t.currentEpoch).toBe(1);
    expect(stop.stoppedReason).toMatch(/val_loss did not improve/);
    expect(typeof t.callbackMetrics.val_loss).toBe("number");
    const files = readdirSync(dir).filter((f) => f.endsWith(".safetensors")).sort();
    expect(files).toHaveLength(2);
    expect(files[0]).toMatch(/^m-\d+-\d+\.\d{3}\.safetensors$/);
    expect(ckpt.bestModelPath).not.toBeNull();
  });

  it("a training step leaves no tensor behind", async () => {
    const counts: number[] = [];
    const probe: Callback = {
      onTrainBatchEnd: () => void counts.push(memoryStats("cpu").liveTensors),
    };
    const t = new Trainer({ ...quiet, maxSteps: 6, logger: false, enableCheckpointing: false, callbacks: [probe] });
    await t.fit(new GPTLanguageModel({ config: TINY }), loader());
    // Step 1 creates the optimizer state; every later step ends with exactly as many live tensors.
    expect(new Set(counts.slice(1)).size).toBe(1);
    const bytes: number[] = [];
    const t2 = new Trainer({
      ...quiet,
      maxSteps: 4,
      logger: false,
      enableCheckpointing: false,
      precision: "bf16-mixed",
      callbacks: [{ onTrainBatchEnd: () => void bytes.push(memoryStats("cpu").liveBytes) }],
    });
    await t2.fit(new GPTLanguageModel({ config: TINY }), loader());
    expect(new Set(bytes.slice(1)).size).toBe(1);
  });

  it("precisions: bf16-mixed keeps fp32 master weights and trains; bf16-true stores bf16", async () => {
    for (const precision of ["bf16-mixed", "bf16-true"] as const) {
      const rec = new LossRecorder();
      const m = new GPTLanguageModel({ config: TINY, lr: 1e-2 });
      await new Trainer({ ...quiet, maxSteps: 8, logger: false, enableCheckpointing: false, precision, callbacks: [rec] }).fit(m, loader());
      expect(m.model!.parameters()[0].dtype).toBe(precision === "bf16-true" ? "bfloat16" : "float32");
      expect(rec.losses.at(-1)!, precision).toBeLessThan(rec.losses[0]);
    }
  });

});

describe("Trainer options are validated at the door", () => {
  it("names the field, the value and what is allowed", () => {
    expect(() => new Trainer({ precision: "bf17" as never })).toThrow(/option "precision": got "bf17"; must be one of 16, 32, 64, bf16, 32-true/);
    expect(() => new Trainer({ maxSteps: -5 })).toThrow(/option "maxSteps": got -5; expected a value >= -1/);
    expect(() => new Trainer({ accumulateGradBatches: 0 })).toThrow(/option "accumulateGradBatches": got 0/);
    expect(() => new Trainer({ devices: 1.5 } as never)).toThrow('option "devices": got 1.5; expected a positive integer or "auto"');
    expect(() => new Trainer({ maxStep: 3 } as never)).toThrow(/unknown option\(s\) "maxStep"/);
    expect(() => new Trainer({ gradientClipAlgorithm: "l3" as never })).toThrow(/expected one of "norm", "value"/);
  });

  it("asking for more devices than the accelerator has fails before anything starts", async () => {
    const twoDevices = { ...new CpuAccelerator(), name: "fake", contractVersion: CONTRACT_VERSION, deviceCount: () => 2 };
    Object.setPrototypeOf(twoDevices, CpuAccelerator.prototype);
    const t = new Trainer({ ...quiet, accelerator: twoDevices, devices: 4, logger: false, enableCheckpointing: false, maxSteps: 1 });
    await expect(t.fit(new GPTLanguageModel({ config: TINY }), loader())).rejects.toThrow(
      "devices: got 4; only 2 fake device(s) are available on this machine",
    );
  });

  // (A name of a first-party package that is not installed: @fulgur/core's registry tests hold the message.)
  it("unknown strategies are explained, with the closest registered name", async () => {
    const fit = (strategy: string) =>
      new Trainer({ ...quiet, strategy, logger: false, enableCheckpointing: false, maxSteps: 1 }).fit(new GPTLanguageModel({ config: TINY }), loader());
    await expect(fit("warp_drive")).rejects.toThrow(/strategy "warp_drive" is not registered\. Registered strategy names: .*single_device/);
    await expect(fit("singel_device")).rejects.toThrow(/strategy "singel_device" is not registered\. Did you mean "single_device" \(from @fulgur\/strategy-kit\)\?/);
  });

  it("more CPU processes than cores are warned about, naming both numbers", async () => {
    const { availableParallelism } = await import("node:os");
    const cores = availableParallelism();
    const written: string[] = [];
    const write = process.stderr.write.bind(process.stderr);
    process.stderr.write = ((chunk: string) => (written.push(String(chunk)), true)) as typeof process.stderr.write;
    try {
      // single_device refuses several devices right after the warning, so nothing is launched.
      await new Trainer({ ...quiet, logger: false, enableCheckpointing: false, maxSteps: 1, accelerator: "cpu", devices: cores + 1, strategy: "single_device" })
        .fit(new GPTLanguageModel({ config: TINY }), loader())
        .catch(() => undefined);
    } finally {
      process.stderr.write = write;
    }
    expect(written.join("")).toContain(`devices: ${cores + 1} on the CPU accelerator starts ${cores + 1} processes on a machine with ${cores} cores`);
  });

  it("16-mixed on the CPU and single_device on two devices are refused before anything starts", async () => {
    const fit = (o: Record<string, unknown>) =>
      new Trainer({ ...quiet, logger: false, enableCheckpointing: false, maxSteps: 1, ...o }).fit(new GPTLanguageModel({ config: TINY }), loader());
    await expect(fit({ precision: "16-mixed", accelerator: "cpu" })).rejects.toThrow(
      'precision: "16-mixed" (fp16 with loss scaling) is for GPUs; on the CPU accelerator use "bf16-mixed" or "32-true"',
    );
    await expect(fit({ strategy: "single_device", devices: 2, accelerator: "cpu" })).rejects.toThrow(
      'strategy "single_device" trains one process on one device, but devices × numNodes = 2; use devices: 1, or a multi-process strategy such as "ddp"',
    );
  });
});
