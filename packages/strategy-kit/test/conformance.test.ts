/**
 * The conformance kit in this process (world 1): a conformant strategy passes every check, and each
 * kind of defect fails the check that should catch it, with a message that says what and where.
 */
import { describe, expect, it } from "vitest";
import { CONTRACT_VERSION, type OptimizerStepOptions, type OptimizerStepResult } from "@fulgur/core";
import type { Module, Optimizer } from "@fulgur/nn";
import type { Tensor } from "@fulgur/tensor";
import { SingleDeviceStrategy } from "../src";
import {
  ConformanceError,
  ConformanceOptionError,
  assertConformance,
  describeConformance,
  formatReport,
  plannedChecks,
  runStrategyConformance,
} from "../src/testing";
import { compareTraining } from "../src/testing/compare";
import { globalRows, tokenBatch } from "../src/testing/data";
import type { RankRecord, TrainRecord } from "../src/testing/protocol";

const single = { worldSizes: [1] } as const;
const status = (report: Awaited<ReturnType<typeof runStrategyConformance>>) =>
  Object.fromEntries(report.checks.map((c) => [c.id, c.status]));

describe("a conformant strategy", () => {
  it("single_device passes every check at world 1", async () => {
    const report = await runStrategyConformance(() => new SingleDeviceStrategy(), single);
    expect(status(report)).toEqual({ contract: "pass", abilities: "pass", "train@1": "pass", "checkpoint@1": "pass" });
    expect(report.passed).toBe(true);
    expect(report.strategy).toBe("single_device");
    const train = report.checks.find((c) => c.id === "train@1")!;
    // The same loop on the same strategy: bit for bit the reference, and clipping was exercised.
    expect(train.message).toMatch(/^largest relative loss difference 0\.00e\+0 over 5 steps; losses 5\.67\d+ → 2\.95\d+; clipped at step\(s\) 0, 1, 2, 3, 4$/);
    expect(report.checks.find((c) => c.id === "checkpoint@1")!.message).toBe("87 tensors equal after the round trip on every rank");
    expect(() => assertConformance(report)).not.toThrow();
    expect(formatReport(report)).toContain("✓ train@1: world 1: 5 steps of the tiny GPT (accumulate 2, clip 0.65, 32-true)");
  });
});

/** Forgets to pass the clipping options on to the precision's step. */
class NoClipStrategy extends SingleDeviceStrategy {
  override readonly name = "no_clip";
  override optimizerStep(optimizer: Optimizer, _options: OptimizerStepOptions): Promise<OptimizerStepResult> {
    return super.optimizerStep(optimizer, {});
  }
}

/** Loads checkpoints into a copy it then drops: the module keeps its own weights. */
class ForgetfulStrategy extends SingleDeviceStrategy {
  override readonly name = "forgetful";
  override async loadModuleStateDict(_module: Module, _state: Record<string, Tensor>): Promise<void> {}
}

/** Claims an ability by half: it can save optimizer state but not load it. */
class HalfStateStrategy extends SingleDeviceStrategy {
  override readonly name = "half_state";
  async optimizerStateDict(): Promise<never> {
    throw new Error("unused");
  }
}

describe("defects fail the check that catches them", () => {
  it("a step that ignores gradient clipping fails train@1, naming the steps that differ", async () => {
    const report = await runStrategyConformance(() => new NoClipStrategy(), single);
    expect(status(report)["train@1"]).toBe("fail");
    const message = report.checks.find((c) => c.id === "train@1")!.message;
    // AdamW divides by the running gradient scale, so one unclipped step barely moves the loss; the
    // drift grows from step 2, and the missing gradient norm is named at once.
    expect(message).toMatch(/^step 2: loss 3\.\d+ \(mean over 1 data-parallel rank\(s\)\); one device: 3\.\d+; relative difference \d\.\d\de-\d+ > 0\.00001/);
    expect(message).toContain("rank 0, step 0: optimizerStep reported no gradNorm although clipping by norm was asked for");
    expect(() => assertConformance(report)).toThrow(ConformanceError);
    expect(() => assertConformance(report)).toThrow(/^no_clip failed 1 of 4 conformance check\(s\):\n {2}✗ train@1: /);
  });

  it("a strategy that does not load what it saved fails checkpoint@1", async () => {
    const report = await runStrategyConformance(() => new ForgetfulStrategy(), single);
    expect(status(report)).toMatchObject({ "train@1": "pass", "checkpoint@1": "fail" });
    expect(report.checks.find((c) => c.id === "checkpoint@1")!.message).toMatch(
      /^rank 0: module state: 29 tensor\(s\) differ from what was saved: gpt\.emb\.weight \(values differ\);/,
    );
  });

  it("half an ability fails the abilities check, saying the Trainer would ignore it", async () => {
    const report = await runStrategyConformance(() => new HalfStateStrategy(), single);
    expect(report.checks.find((c) => c.id === "abilities")!.message).toBe(
      "OptimizerStateHandling: has optimizerStateDict but loadOptimizerStateDict is missing; the type guard is false, " +
        "so the Trainer ignores the ability (fallback: the optimizer's own stateDict(), flattened)",
    );
  });

  it("something that is not a strategy fails the contract, and nothing else runs", async () => {
    const report = await runStrategyConformance(() => ({ name: "nope", contractVersion: 1 }) as never, single);
    expect(status(report)).toEqual({ contract: "fail", abilities: "skip", "train@1": "skip", "checkpoint@1": "skip" });
    const message = report.checks[0].message;
    expect(message).toContain(`contractVersion is 1; this @fulgur/core speaks contract version ${CONTRACT_VERSION}`);
    expect(message).toContain("setup should be a function, is missing");
    expect(report.checks[1].message).toBe("the strategy does not implement the contract");
  });

  it("a factory that throws fails the contract with its error", async () => {
    const report = await runStrategyConformance(() => {
      throw new Error("no GPU here");
    }, single);
    expect(report.checks[0]).toMatchObject({ id: "contract", status: "fail", message: "building the strategy threw: no GPU here" });
  });
});

describe("options are checked before anything runs", () => {
  it("world sizes above 1 need a module the ranks can import", async () => {
    await expect(runStrategyConformance(() => new SingleDeviceStrategy(), { worldSizes: [1, 2] })).rejects.toThrow(ConformanceOptionError);
    await expect(runStrategyConformance(() => new SingleDeviceStrategy(), { worldSizes: [1, 2] })).rejects.toThrow(
      /^runStrategyConformance option worker: world sizes 2 run in launched processes, which cannot receive a function/,
    );
  });

  it("a bad option names itself, its value and what is allowed", async () => {
    await expect(runStrategyConformance(() => new SingleDeviceStrategy(), { steps: 0 })).rejects.toThrow(
      "runStrategyConformance option steps: got 0; expected an integer from 1 to 100",
    );
    await expect(runStrategyConformance(() => new SingleDeviceStrategy(), { stepz: 3 } as never)).rejects.toThrow(
      'runStrategyConformance: unknown option(s) "stepz"',
    );
    const worker = { module: "x.js" };
    await expect(runStrategyConformance(worker, { failure: { worldSize: 4 } })).rejects.toThrow(
      "runStrategyConformance option failure.worldSize: got 4; expected one of the launched world sizes 2, 3",
    );
  });

  it("plans its checks from the options", () => {
    const worker = { module: "x.js", export: "X" };
    expect(plannedChecks(worker).map((c) => c.id)).toEqual([
      "contract", "abilities", "train@1", "checkpoint@1", "train@2", "checkpoint@2", "failure@2", "train@3", "checkpoint@3",
    ]);
    expect(plannedChecks(worker, { worldSizes: [3, 2], checkpoint: false, failure: { worldSize: 3 } }).map((c) => c.id)).toEqual([
      "contract", "abilities", "train@2", "train@3", "failure@3",
    ]);
    expect(plannedChecks(worker, { failure: false }).some((c) => c.id.startsWith("failure"))).toBe(false);
  });
});

describe("describeConformance", () => {
  it("registers one test per check and runs the strategy once for all of them", async () => {
    const tests: { name: string; fn: () => Promise<void> }[] = [];
    let suite = "";
    let built = 0;
    describeConformance(
      { describe: (name, fn) => ((suite = name), fn()), it: (name, fn) => tests.push({ name, fn }) },
      "my strategy",
      () => (built++, new NoClipStrategy()),
      single,
    );
    expect(suite).toBe("my strategy");
    expect(tests.map((t) => t.name.split(":")[0])).toEqual(["contract", "abilities", "train@1", "checkpoint@1"]);
    const outcomes = await Promise.all(tests.map((t) => t.fn().then(() => "ok", (e: Error) => e.message.split("\n")[0])));
    expect(outcomes[0]).toBe("ok");
    expect(outcomes[2]).toMatch(/^train@1: step 2: loss/);
    // The probe for the contract, one strategy for world 1.
    expect(built).toBe(2);
  });
});

describe("the comparison with one device", () => {
  const layout = (rank: number, dp = rank, size = 2): RankRecord => ({
    kind: "rank", pid: 1, strategy: "s", globalRank: rank, localRank: rank, worldSize: 2, isGlobalZero: rank === 0,
    rootDevice: "cpu", dataParallel: { rank: dp, size }, exceptionAware: true, problems: [],
  });
  const train = (losses: number[], gradNorms = losses.map(() => 1)): TrainRecord => ({ kind: "train", losses, gradNorms, stepped: losses.map(() => true) });
  const reference = train([4, 3], [1, 0.5]);
  const o = { tolerance: 1e-5, gradientClipVal: 0.65 };

  it("averages the data-parallel ranks' losses", () => {
    const r = compareTraining(reference, [{ rank: 0, layout: layout(0), train: train([4.5, 3.5], [1, 0.5]) }, { rank: 1, layout: layout(1), train: train([3.5, 2.5], [1, 0.5]) }], o);
    expect(r.problems).toEqual([]);
    expect(r.summary).toBe("largest relative loss difference 0.00e+0 over 2 steps; losses 4.0000 → 3.0000; clipped at step(s) 0");
  });

  it("names ranks that drift apart (gradients not synchronised) and the steps that differ", () => {
    const r = compareTraining(reference, [{ rank: 0, layout: layout(0), train: train([4.5, 3.6], [1, 0.5]) }, { rank: 1, layout: layout(1), train: train([3.5, 2.5], [1, 0.5]) }], o);
    expect(r.problems).toEqual(["step 1: loss 3.05 (mean over 2 data-parallel rank(s)); one device: 3; relative difference 1.67e-2 > 0.00001"]);
  });

  it("counts ranks sharing a data-parallel rank once, and requires them to agree", () => {
    const same = compareTraining(reference, [{ rank: 0, layout: layout(0, 0, 1), train: train([4, 3], [1, 0.5]) }, { rank: 1, layout: layout(1, 0, 1), train: train([4, 3], [1, 0.5]) }], o);
    expect(same.problems).toEqual([]);
    const differ = compareTraining(reference, [{ rank: 0, layout: layout(0, 0, 1), train: train([4, 3], [1, 0.5]) }, { rank: 1, layout: layout(1, 0, 1), train: train([4, 2], [1, 0.5]) }], o);
    expect(differ.problems[0]).toBe("ranks 0 and 1 share data-parallel rank 0 but report different losses at step 1: 3 and 2");
  });

  it("fails when the reference never clipped, since clipping was then not tested", () => {
    const r = compareTraining(train([4, 3], [0.1, 0.1]), [{ rank: 0, layout: layout(0, 0, 1), train: train([4, 3], [0.1, 0.1]) }], o);
    expect(r.problems).toEqual(["no single-device step had a gradient norm above gradientClipVal 0.65, so clipping was not exercised; lower gradientClipVal"]);
  });
});

describe("the synthetic data", () => {
  it("splits the global batch over any data-parallel size up to the largest world", () => {
    expect([1, 2, 3, 4].map(globalRows)).toEqual([4, 4, 6, 12]);
    const o = { seed: 7, rows: 6, seqLen: 5, vocabSize: 256 };
    const whole = tokenBatch(o, 3);
    const parts = [0, 2, 4].map((first) => tokenBatch(o, 3, first, 2));
    expect(Array.from(parts.flatMap((p) => Array.from(p.inputs)))).toEqual(Array.from(whole.inputs));
    // Each target is the next token of its row's progression.
    expect(whole.targets[0]).toBe(whole.inputs[1]);
    expect(() => tokenBatch(o, 0, 5, 2)).toThrow("tokenBatch: rows [5, 7) are outside the global batch of 6");
  });
});
