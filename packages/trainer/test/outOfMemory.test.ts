/**
 * Out-of-memory advice (issue 15): an allocation that fails during a step ends `fit` with an error
 * naming the step, the phase and what the memory plan says would fit. The CPU backend runs out on
 * purpose under a byte limit (setCpuMemoryLimit), as a GPU would.
 */
import { afterEach, describe, expect, it } from "vitest";
import { OutOfMemoryError, isOutOfMemory, memoryStats, setCpuMemoryLimit, zeros } from "@fulgur/tensor";
import { type MemoryPlan, type PlanRow, Trainer, TrainingOutOfMemoryError, describeMachine, outOfMemoryAdvice } from "../src";
import { GPTLanguageModel } from "../src/demos";
import { TINY, loader } from "./helpers";

const quiet = { enableProgressBar: false, logger: false, enableCheckpointing: false, accelerator: "cpu", devices: 1 } as const;

afterEach(() => setCpuMemoryLimit(null));

describe("the CPU backend's memory limit", () => {
  it("refuses an allocation past the limit with an OutOfMemoryError carrying the bytes asked for", () => {
    const live = memoryStats("cpu").liveBytes;
    setCpuMemoryLimit(live + 1024);
    const small = zeros([64]);
    const err = (() => {
      try {
        zeros([1024]);
      } catch (e) {
        return e;
      }
      return null;
    })();
    expect(err).toBeInstanceOf(OutOfMemoryError);
    expect(isOutOfMemory(err)).toBe(true);
    expect((err as OutOfMemoryError).requested).toBe(4096);
    expect((err as Error).message).toBe(`cpu out of memory: could not allocate 4096 bytes with ${live + 256} of the ${live + 1024} allowed already allocated (the limit set by setCpuMemoryLimit)`);
    small.dispose();
    expect(() => setCpuMemoryLimit(-1)).toThrow("setCpuMemoryLimit: bytes: got -1; expected a non-negative integer number of bytes, or null for no limit");
  });
});

describe("fit out of memory", () => {
  it("names the step and the phase, and from the plan the micro-batch that fits", async () => {
    // Micro-batch 16 of the tiny GPT needs about 1.5 MB; 1.2 MB of "GPU" fits about 10.
    const gpuMemory = 1_200_000;
    const trainer = new Trainer({ ...quiet, strategy: "single_device", maxSteps: 2, ignoreMemoryPlan: true, machine: { gpuMemory, hostMemory: "1GiB" } });
    const data = loader({ batchSize: 16 });
    setCpuMemoryLimit(memoryStats("cpu").liveBytes + gpuMemory);
    const err = await trainer.fit(new GPTLanguageModel({ config: TINY }), data).catch((e: unknown) => e);
    setCpuMemoryLimit(null);
    expect(err).toBeInstanceOf(TrainingOutOfMemoryError);
    const e = err as TrainingOutOfMemoryError;
    const row = trainer.memoryPlan!.rows.find((r) => r.strategy === "single_device")!;
    expect(row.fits).toBe(false);
    expect(row.maxMicroBatch).toBeGreaterThan(1);
    expect(row.maxMicroBatch).toBeLessThan(16);
    expect(e.step).toBe(1);
    expect(["forward", "backward", "optimizer"]).toContain(e.phase);
    expect(e.message).toMatch(new RegExp(`^out of memory at step 1 \\(epoch 0\\), in the ${e.phase}, training single_device at micro-batch 16: cpu out of memory: could not allocate \\d+ bytes`));
    expect(e.advice).toContain(`micro-batch ${row.maxMicroBatch} fits with single_device (accumulateGradBatches × 2 keeps about the same batch per step)`);
    expect(isOutOfMemory(e.cause)).toBe(true);
  });

  it("without a plan (CPU, no machine described) says how to get one; the phase is the one that ran out", async () => {
    // Once the model and the optimizer are set up, room for the batch (16 × 17 int32) and 3 kB more:
    // the first forward runs out.
    const limitAtStart = { onFitStart: () => setCpuMemoryLimit(memoryStats("cpu").liveBytes + 16 * 17 * 4 + 3072) };
    const trainer = new Trainer({ ...quiet, strategy: "single_device", maxSteps: 1, callbacks: [limitAtStart] });
    const err = await trainer.fit(new GPTLanguageModel({ config: TINY }), loader({ batchSize: 16 })).catch((e: unknown) => e);
    setCpuMemoryLimit(null);
    expect(err).toBeInstanceOf(TrainingOutOfMemoryError);
    const e = err as TrainingOutOfMemoryError;
    expect(e.phase).toBe("forward");
    expect(e.message).toMatch(/^out of memory at step 1 \(epoch 0\), in the forward, training single_device at micro-batch 16: cpu out of memory/);
    expect(e.advice).toContain("No memory plan was made for this run");
  });
});

describe("the advice, from a plan", () => {
  const row = (strategy: string, fits: boolean, maxMicroBatch: number): PlanRow => ({
    strategy, options: {}, fits, perDeviceBytes: 90 * 2 ** 30, hostBytesPerNode: 0, diskBytesPerNode: 0, maxMicroBatch, problems: [], estimate: null,
  });
  const plan = (rows: PlanRow[]): MemoryPlan => ({
    machine: describeMachine({ devicesPerNode: 8, nodes: 1 }, { gpuMemory: "80GiB", hostMemory: "1TiB" }),
    precision: "bf16-mixed", microBatch: 8, accumulateGradBatches: 1, worldSize: 8, parameters: 7e9,
    usableGpuBytes: 72 * 2 ** 30, usableHostBytes: 921 * 2 ** 30, usableDiskBytes: null, rows,
  });

  it("names a smaller micro-batch of the same strategy and the strategies that fit at this one", () => {
    const p = plan([row("ddp", false, 0), row("fsdp", false, 3), row("fsdp_cpu_offload", true, 12), row("deepspeed_stage_3_offload", true, 12)]);
    expect(outOfMemoryAdvice(p, "fsdp", 8)).toBe(
      "From the memory plan: micro-batch 3 fits with fsdp (accumulateGradBatches × 3 keeps about the same batch per step); fsdp_cpu_offload, deepspeed_stage_3_offload fit at micro-batch 8.",
    );
    expect(outOfMemoryAdvice(p, "ddp", 8)).toBe("From the memory plan: fsdp_cpu_offload, deepspeed_stage_3_offload fit at micro-batch 8.");
    expect(outOfMemoryAdvice(plan([row("ddp", false, 0)]), "ddp", 8)).toContain("nothing fits this machine at micro-batch 8");
    // The plan said it fits: the advice says the estimate or the device is off, not what to change.
    expect(outOfMemoryAdvice(plan([{ ...row("ddp", true, 9), perDeviceBytes: 60 * 2 ** 30 }]), "ddp", 8)).toBe(
      "From the memory plan: the plan estimated 60.0 GiB per GPU for ddp, within the 72.0 GiB it counts as usable: memory outside the estimate (another process on the device?) or an estimate that is short; please report it with the plan.",
    );
  });
});
