/**
 * docs/guide/custom-strategy.md shows only code that runs: every fenced block in it is a file of the
 * repository (or a `#region` of one), named by the `<!-- include: path[#region] -->` line above it,
 * and must equal it. The snippets under test/guide are run here (the two multi-process ones in
 * conformanceWorlds.test.ts); the others are tests of their own packages.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { Registry, type Strategy, assertStrategy, isExceptionAware, isLaunching } from "@fulgur/core";
import { GPT } from "@fulgur/nn";
import { modelBytes } from "../src";
import { type ConformanceOptions, formatReport, runStrategyConformance } from "../src/testing";
import { AveragingStrategy } from "./guide/averagingStrategy";
import { SyncCountingStrategy } from "./guide/backwardSyncControl";
import { HalvingStrategy } from "./guide/batchRunning";
import { NoteTakingStrategy } from "./guide/exceptionAware";
import { ExternallyLaunchedStrategy } from "./guide/launching";
import { AveragedWeightsStrategy } from "./guide/memoryEstimating";
import { BuildReportingStrategy } from "./guide/moduleBuilding";
import { TaggedStateStrategy } from "./guide/optimizerStateHandling";
import { PACKAGE_NAME, registerStrategies } from "./guide/registration";

const ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const GUIDE = "docs/guide/custom-strategy.md";

interface Block {
  readonly line: number;
  readonly include: string | undefined;
  readonly code: string;
}

/** The fenced blocks of a markdown text, each with the include line right above it, if any. */
function fencedBlocks(markdown: string): Block[] {
  const lines = markdown.split("\n");
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (!lines[i].startsWith("```")) continue;
    const start = i;
    const end = lines.indexOf("```", i + 1);
    if (end < 0) throw new Error(`${GUIDE}:${start + 1}: a code block is never closed`);
    const include = /^<!-- include: (\S+) -->$/.exec(lines[start - 1] ?? "")?.[1];
    blocks.push({ line: start + 1, include, code: lines.slice(start + 1, end).join("\n") });
    i = end;
  }
  return blocks;
}

/** A file of the repository, or the lines between `// #region name` and `// #endregion name` in it. */
function included(spec: string): string {
  const [path, region] = spec.split("#");
  const text = readFileSync(join(ROOT, path), "utf8").replace(/\n$/, "");
  if (!region) return text;
  const lines = text.split("\n");
  const from = lines.findIndex((l) => l.trim() === `// #region ${region}`);
  const to = lines.findIndex((l) => l.trim() === `// #endregion ${region}`);
  if (from < 0 || to < from) throw new Error(`${path} has no region "${region}"`);
  return lines.slice(from + 1, to).join("\n");
}

describe(`${GUIDE}`, () => {
  const blocks = fencedBlocks(readFileSync(join(ROOT, GUIDE), "utf8"));

  it("has code, every block of it included from a file", () => {
    expect(blocks.length).toBeGreaterThan(10);
    expect(blocks.filter((b) => !b.include).map((b) => `line ${b.line}`)).toEqual([]);
  });

  for (const b of blocks.filter((x) => x.include)) {
    it(`line ${b.line} is ${b.include}, verbatim`, () => {
      expect(b.code).toBe(included(b.include!));
    });
  }
});

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** World 1 only, three steps: enough to drive each ability through the kit's loop. */
const quick: ConformanceOptions = { worldSizes: [1], steps: 3 };

async function passes(make: () => Strategy): Promise<string> {
  const report = await runStrategyConformance(make, quick);
  expect(report.passed, formatReport(report)).toBe(true);
  return report.checks.find((c) => c.id === "abilities")!.message;
}

describe("the guide's examples run", () => {
  it("ModuleBuilding: the kit builds the model through buildModule", async () => {
    let last: BuildReportingStrategy | undefined;
    expect(await passes(() => (last = new BuildReportingStrategy()))).toContain("ModuleBuilding");
    expect(last!.builtParameters).toBe(new GPT("tiny").numParameters());
  });

  it("BatchRunning: two halves per batch train like the whole batch", async () => {
    expect(await passes(() => new HalvingStrategy())).toContain("BatchRunning");
  });

  it("OptimizerStateHandling: the optimizer state round-trips in the strategy's layout, and another layout is refused", async () => {
    expect(await passes(() => new TaggedStateStrategy())).toContain("OptimizerStateHandling");
    await expect(new TaggedStateStrategy().loadOptimizerStateDict(null as never, { tensors: {}, meta: { layout: "other" } })).rejects.toThrow(
      'tagged_state: optimizer state of layout "other"; this strategy reads "tagged-v1"',
    );
  });

  it("MemoryEstimating: one more copy of the trained weights in the workspace", () => {
    const module = new GPT("tiny");
    const input = { module, precision: "32-true", microBatch: 8 };
    const estimate = new AveragedWeightsStrategy().estimateMemory(input);
    const plain = new AveragingStrategy().estimateMemory(input);
    expect(estimate.perDevice.workspace - plain.perDevice.workspace).toBe(modelBytes(input).trainable);
    expect(estimate.perDevice.total - plain.perDevice.total).toBe(modelBytes(input).trainable);
    expect(estimate.notes).toContain("workspace: the moving average of the trained weights");
  });

  it("ExceptionAware: onException leaves the note", async () => {
    const dir = mkdtempSync(join(tmpdir(), "guide-"));
    dirs.push(dir);
    const s = new NoteTakingStrategy(join(dir, "failed.txt"));
    expect(isExceptionAware(s)).toBe(true);
    await s.onException(new Error("out of memory"));
    expect(readFileSync(join(dir, "failed.txt"), "utf8")).toBe("note_taking on rank 0 failed: out of memory\n");
  });

  it("BackwardSyncControl: the first micro-batch of each step runs without synchronisation", async () => {
    let last: SyncCountingStrategy | undefined;
    expect(await passes(() => (last = new SyncCountingStrategy()))).toContain("BackwardSyncControl");
    expect(last!.backwards).toEqual({ synced: 3, skipped: 3 });
  });

  it("Launching: the strategy says how to start the ranks instead", async () => {
    const s = new ExternallyLaunchedStrategy();
    expect(isLaunching(s)).toBe(true);
    await expect(s.launch({ devices: 4, numNodes: 1, script: "train.ts" })).rejects.toThrow(
      "averaging_external does not start processes; run `fulgur run --nproc-per-node 4 --nnodes 1 train.ts`",
    );
  });

  it("registration: the table's names, with their defaults and package, once", () => {
    const registry = new Registry<Strategy>("strategy", assertStrategy, {});
    expect(registerStrategies(registry)).toEqual(["averaging", "averaging_spawn"]);
    expect(registerStrategies(registry)).toEqual([]);
    expect(registry.get("averaging_spawn")).toMatchObject({ package: PACKAGE_NAME, defaults: { startMethod: "spawn" } });
    expect(registry.create("averaging").name).toBe("averaging");
  });
});
