/**
 * The memory plan's Trainer side (issue 15): sizes read with the field named, `Trainer.plan()` on a
 * module built on `meta` and left unconfigured, and the pre-flight check of `fit`, which refuses on
 * a described small machine before anything is set up, unless told to try, and lets "auto" pick.
 * Plans over the strategy packages (DDP, FSDP, ZeRO) are tested in @fulgur/cli's plan.test.ts,
 * which may depend on them.
 */
import { afterEach, describe, expect, it, vi } from "vitest";
import type { Accelerator } from "@fulgur/core";
import { estimateReplicatedMemory } from "@fulgur/strategy-kit";
import { GPT } from "@fulgur/nn";
import { withDevice } from "@fulgur/tensor";
import { CpuAccelerator, MemoryPlanError, PLAN_HEADROOM, Trainer, chooseStrategy, describeMachine, parseBytes, planMemory, renderPlan } from "../src";
import { GPTLanguageModel } from "../src/demos";
import { TINY, loader } from "./helpers";

const quiet = { enableProgressBar: false, logger: false, enableCheckpointing: false, accelerator: "cpu", devices: 1 } as const;
const tinyModule = (): GPTLanguageModel => new GPTLanguageModel({ config: TINY });

/** single_device's own estimate of the tiny model at micro-batch 4 in fp32: what the plan must report. */
function singleDeviceBytes(): number {
  const module = withDevice("meta", () => new GPT(TINY));
  return estimateReplicatedMemory("single_device", { module, precision: "32-true", microBatch: 4, worldSize: 1 }, { communicationBytes: 0 }).perDevice.total;
}

afterEach(() => vi.restoreAllMocks());

describe("sizes and machines", () => {
  it("reads binary and decimal units and refuses anything else, naming the field and the value", () => {
    expect(parseBytes("gpuMemory", "80GiB")).toBe(80 * 2 ** 30);
    expect(parseBytes("gpuMemory", "1.5 TiB")).toBe(1.5 * 2 ** 40);
    expect(parseBytes("hostMemory", "512GB")).toBe(512e9);
    expect(parseBytes("hostMemory", 4096)).toBe(4096);
    expect(() => parseBytes("gpuMemory", "80 gigs")).toThrow('gpuMemory: got "80 gigs"; expected a positive size such as "80GiB"');
    expect(() => parseBytes("hostMemory", -1)).toThrow("hostMemory: got -1; expected a positive size");
    expect(() => new Trainer({ machine: { gpuMemory: "80GiB", disk: "1TB" } as never })).toThrow(/machine/);
  });

  it("a described machine keeps what it is told; without a GPU the device memory is the host's", () => {
    const m = describeMachine({ devicesPerNode: 8, nodes: 2 }, { gpuMemory: "80GiB", hostMemory: "1TiB" });
    expect([m.gpuMemoryBytes, m.hostMemoryBytes, m.devicesPerNode, m.nodes]).toEqual([80 * 2 ** 30, 2 ** 40, 8, 2]);
    expect(m.source).toBe("GPU memory described; host memory described");
    expect(describeMachine({ devicesPerNode: 1, nodes: 1 }).source).toContain("no GPU: device memory is the host's");
  });

  it("a GPU's memory comes from an accelerator that reports it (the CUDA accelerator's deviceMemoryBytes)", () => {
    const asked: string[] = [];
    const gpu = {
      ...new CpuAccelerator(),
      name: "fake-gpu",
      deviceFor: (r: number) => `fake:${r}`,
      deviceMemoryBytes: (device: string) => (asked.push(device), 141 * 2 ** 30),
    } as unknown as Accelerator;
    const m = describeMachine({ devicesPerNode: 8, nodes: 1 }, { hostMemory: "2TiB" }, gpu);
    expect(asked).toEqual(["fake:0"]);
    expect(m.gpuMemoryBytes).toBe(141 * 2 ** 30);
    expect(m.source).toBe("GPU memory of fake:0; host memory described");
  });
});

describe("Trainer.plan()", () => {
  it("plans the module on meta, reports the strategy's own estimate and leaves the module unconfigured", async () => {
    const module = tinyModule();
    const plan = await new Trainer(quiet).plan(module, { microBatch: 4, machine: { gpuMemory: "1GiB", hostMemory: "1GiB" }, candidates: [{ strategy: "single_device" }] });
    expect(module.parameters()).toHaveLength(0);
    expect(module.model).toBeNull();
    const [row] = plan.rows;
    expect(row.strategy).toBe("single_device");
    expect(row.perDeviceBytes).toBe(singleDeviceBytes());
    expect(row.fits).toBe(true);
    expect(plan.usableGpuBytes).toBe(Math.floor(2 ** 30 * (1 - PLAN_HEADROOM)));
    // The module still builds for real afterwards.
    module.configureModel();
    expect(module.parameters().length).toBeGreaterThan(0);
  });

  it("builds the network once, on meta, for every strategy and micro-batch it plans; fit builds it once more, for training", async () => {
    /** Where each call of configureModel put the parameters. */
    class Counted extends GPTLanguageModel {
      built: string[] = [];
      override configureModel(): void {
        super.configureModel();
        this.built.push(this.parameters()[0].device);
      }
    }
    const planned = new Counted({ config: TINY });
    const plan = await new Trainer(quiet).plan(planned, { microBatch: 1, machine: { gpuMemory: "1GiB", hostMemory: "1GiB" }, candidates: [{ strategy: "single_device" }, { strategy: "single_device" }] });
    // Two estimated rows, each searching its biggest micro-batch: one build.
    expect(plan.rows.filter((r) => r.maxMicroBatch > 1)).toHaveLength(2);
    expect(planned.built).toEqual(["meta"]);
    // fit plans before anything is chosen or launched, then the strategy builds on its device:
    // what configureModel writes (weights loaded from a file, values from the seed) is made there.
    const trained = new Counted({ config: TINY });
    await new Trainer({ ...quiet, strategy: "auto", maxSteps: 1, machine: { gpuMemory: "1GiB", hostMemory: "1GiB" } }).fit(trained, loader({ batchSize: 4 }));
    expect(trained.built).toEqual(["meta", "cpu"]);
  });

  it("the biggest micro-batch that fits is the largest whose estimate is within the usable memory", async () => {
    const gpu = 4 * 2 ** 20;
    const machine = describeMachine({ devicesPerNode: 1, nodes: 1 }, { gpuMemory: gpu, hostMemory: "1GiB" });
    const module = withDevice("meta", () => new GPT(TINY));
    const plan = await planMemory({ module, machine, precision: "32-true", microBatch: 1, candidates: [{ strategy: "single_device" }] });
    const best = plan.rows[0].maxMicroBatch;
    expect(best).toBeGreaterThan(1);
    const at = (b: number) => estimateReplicatedMemory("single_device", { module, precision: "32-true", microBatch: b }, { communicationBytes: 0 }).perDevice.total;
    expect(at(best)).toBeLessThanOrEqual(plan.usableGpuBytes);
    expect(at(best + 1)).toBeGreaterThan(plan.usableGpuBytes);
    expect(renderPlan(plan)).toMatch(new RegExp(`single_device +yes .* ${best} +`));
  });

  it("an unknown strategy is a row with the reason, not a failure of the plan", async () => {
    const plan = await new Trainer(quiet).plan(tinyModule(), { machine: { gpuMemory: "1GiB" }, candidates: [{ strategy: "no_such_strategy" }, { strategy: "single_device" }] });
    expect(plan.rows[0].error).toMatch(/no_such_strategy/);
    expect(plan.rows[1].fits).toBe(true);
    expect(chooseStrategy(plan).strategy).toBe("single_device");
  });
});

describe("fit checks the plan before anything is set up", () => {
  it("refuses a strategy that cannot fit a described machine, with the table and the micro-batch that fits", async () => {
    const need = singleDeviceBytes();
    // Usable memory just under what micro-batch 4 needs.
    const gpuMemory = Math.floor((need - 1) / (1 - PLAN_HEADROOM));
    const trainer = new Trainer({ ...quiet, strategy: "single_device", maxSteps: 1, machine: { gpuMemory, hostMemory: "1GiB" } });
    const err = await trainer.fit(tinyModule(), loader({ batchSize: 4 })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MemoryPlanError);
    const message = (err as Error).message;
    expect(message).toMatch(/^memory plan: single_device does not fit at micro-batch 4 \(GPU .* > .* usable\); micro-batch [1-3] fits; nothing was launched/);
    expect(message).toContain("ignoreMemoryPlan: true");
    expect(message).toContain("STRATEGY");
    expect(trainer.strategy).toBeNull();
    expect(trainer.globalStep).toBe(0);
  });

  it("trains anyway with ignoreMemoryPlan", async () => {
    const trainer = new Trainer({ ...quiet, strategy: "single_device", maxSteps: 1, ignoreMemoryPlan: true, machine: { gpuMemory: "64KiB", hostMemory: "1GiB" } });
    await trainer.fit(tinyModule(), loader({ batchSize: 4 }));
    expect(trainer.globalStep).toBe(1);
    expect(trainer.memoryPlan?.rows.find((r) => r.strategy === "single_device")?.fits).toBe(false);
  });

  it('"auto" on one device with a described machine trains single_device when it fits and says why', async () => {
    const lines: string[] = [];
    vi.spyOn(process.stdout, "write").mockImplementation((s: string | Uint8Array) => (lines.push(String(s)), true));
    const trainer = new Trainer({ ...quiet, strategy: "auto", maxSteps: 1, machine: { gpuMemory: "1GiB", hostMemory: "1GiB" } });
    await trainer.fit(tinyModule(), loader({ batchSize: 4 }));
    vi.restoreAllMocks();
    expect(trainer.strategy?.name).toBe("single_device");
    const said = lines.find((l) => l.startsWith("fulgur: strategy \"auto\" picked single_device"));
    expect(said).toMatch(/single_device needs .* per GPU, which fits \(921\.6 MiB usable of 1\.0 GiB per GPU/);
  });

  it("on the CPU with no machine described nothing is planned (the old auto rule stays)", async () => {
    const trainer = new Trainer({ ...quiet, strategy: "auto", maxSteps: 1 });
    await trainer.fit(tinyModule(), loader({ batchSize: 4 }));
    expect(trainer.memoryPlan).toBeNull();
    expect(trainer.strategy?.name).toBe("single_device");
  });
});
