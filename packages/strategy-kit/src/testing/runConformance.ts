/**
 * `runStrategyConformance`: holds a strategy to what the Trainer relies on, for a third-party
 * author's CI. In order: (a) the contract's shape and the abilities it has; one device's losses as
 * the reference (the kit's own single_device, in this process); then each world size (b) trained
 * against them, (c) with a checkpoint round trip, and in one launched world (d) a failure injected
 * on the last rank. World 1 runs in this process; larger worlds are launched as processes, one
 * world per size, every phase in it (a launch costs more than the training of the tiny GPT).
 *
 * Nothing here imports a test framework: the result is a report, and the caller asserts on it
 * (`assertConformance`), or registers one test per check (`describeConformance`).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { LaunchResult } from "@fulgur/distributed";
import { detectClusterEnvironment } from "@fulgur/distributed";
import { SingleDeviceStrategy } from "../singleDevice";
import { abilityProblems, contractProblems } from "./contract";
import { globalRows } from "./data";
import { type WorldRun, launchWorld } from "./launchWorld";
import {
  type ConformanceOptions,
  type ResolvedConformanceOptions,
  type StrategySource,
  resolveConformanceOptions,
} from "./options";
import type { ConformanceRecord, TrainRecord, TrainingPlan } from "./protocol";
import { runRank } from "./rank";
import { CheckList, type ConformanceReport } from "./report";
import { buildStrategy, strategyFromModule } from "./strategySource";
import { addWorldChecks, checkTitles } from "./worldChecks";

const CONTRACT_TITLE = "implements the Strategy contract (members and contract version)";
const ABILITIES_TITLE = "the optional abilities it has are whole and well formed";

/** The checks a run with these options makes, in order, before it runs (for one test per check). */
export function plannedChecks(source: StrategySource, options: ConformanceOptions = {}): { id: string; title: string }[] {
  const o = resolveConformanceOptions(source, options);
  const out = [
    { id: "contract", title: CONTRACT_TITLE },
    { id: "abilities", title: ABILITIES_TITLE },
  ];
  for (const world of o.worldSizes) {
    const t = checkTitles(o, world);
    out.push({ id: `train@${world}`, title: t.train });
    if (o.checkpoint) out.push({ id: `checkpoint@${world}`, title: t.checkpoint });
    if (o.failure?.worldSize === world) out.push({ id: `failure@${world}`, title: t.failure });
  }
  return out;
}

/** The environment without rank variables: a world of one in this process is rank 0 of 1. */
function singleProcessEnv(env: Readonly<Record<string, string | undefined>>): Record<string, string | undefined> {
  return Object.fromEntries(Object.entries(env).filter(([k]) => !/^(RANK|WORLD_SIZE|LOCAL_RANK|LOCAL_WORLD_SIZE|GROUP_RANK|SLURM_.*)$/.test(k)));
}

/** A world of one in this process, reported in the shape of a launched world. */
async function runHere(source: StrategySource, plan: TrainingPlan, checkpointPath: string | undefined, env: Record<string, string | undefined>): Promise<WorldRun> {
  const started = performance.now();
  const records: ConformanceRecord[] = [];
  const lines: string[] = [];
  let result: LaunchResult = { exitCode: 0 };
  try {
    const strategy = await buildStrategy(source);
    await runRank(strategy, detectClusterEnvironment(env), { plan, checkpointPath }, (r) => records.push(r));
  } catch (err) {
    const text = err instanceof Error ? (err.stack ?? err.message) : String(err);
    lines.push(...text.split("\n"));
    result = { exitCode: 1, failedRank: 0, message: `rank 0 (in this process) threw: ${err instanceof Error ? err.message : String(err)}` };
  }
  return {
    worldSize: 1,
    result,
    ranks: new Map([[0, { records, lines }]]),
    launcherLines: [],
    failureStartedMs: undefined,
    endedMs: performance.now() - started,
    timedOut: false,
  };
}

/** One device's losses on the global batch: the kit's single_device strategy through the same loop. */
async function referenceTraining(plan: TrainingPlan, env: Record<string, string | undefined>): Promise<TrainRecord> {
  const run = await runHere(() => new SingleDeviceStrategy(), plan, undefined, env);
  const train = run.ranks.get(0)!.records.find((r): r is TrainRecord => r.kind === "train");
  if (!train) throw new Error(`conformance: the single-device reference run failed: ${run.result.message}\n${run.ranks.get(0)!.lines.join("\n")}`);
  return train;
}

export async function runStrategyConformance(source: StrategySource, options: ConformanceOptions = {}): Promise<ConformanceReport> {
  const o: ResolvedConformanceOptions = resolveConformanceOptions(source, options);
  const started = performance.now();
  const checks = new CheckList();
  const env = singleProcessEnv(o.env ?? process.env);
  const planned = plannedChecks(source, options);
  const skipRest = (why: string): void => planned.forEach((c) => checks.skip(c.id, c.title, why));

  // (a) the contract, on a strategy that is built and never set up
  let name = "(unknown)";
  let probe: object | undefined;
  let contractOk = false;
  let t0 = performance.now();
  try {
    probe = typeof source === "function" ? await source() : await strategyFromModule(source);
  } catch (err) {
    checks.add("contract", CONTRACT_TITLE, [`building the strategy threw: ${(err as Error).message}`], "", Math.round(performance.now() - t0));
  }
  if (probe) {
    const problems = contractProblems(probe);
    if (typeof (probe as { name?: unknown }).name === "string") name = (probe as { name: string }).name;
    checks.add("contract", CONTRACT_TITLE, problems, `contract version ${(probe as { contractVersion?: unknown }).contractVersion}`, Math.round(performance.now() - t0));
    contractOk = problems.length === 0;
    if (contractOk) {
      t0 = performance.now();
      const abilities = abilityProblems(probe);
      checks.add("abilities", ABILITIES_TITLE, abilities.problems, `has ${abilities.has.length ? abilities.has.join(", ") : "none (the Trainer's fallbacks apply)"}`, Math.round(performance.now() - t0));
    }
  }
  if (!contractOk) {
    skipRest("the strategy does not implement the contract");
    return checks.report(name, Math.round(performance.now() - started));
  }

  const plan: TrainingPlan = {
    seed: o.seed,
    steps: o.steps,
    accumulate: o.accumulate,
    gradientClipVal: o.gradientClipVal,
    precision: o.precision,
    seqLen: o.seqLen,
    rows: globalRows(Math.max(...o.worldSizes)),
  };
  const reference = await referenceTraining(plan, env);
  const dir = mkdtempSync(join(tmpdir(), "fulgur-conformance-"));
  try {
    for (const world of o.worldSizes) {
      const checkpointPath = o.checkpoint ? join(dir, `world-${world}`, "checkpoint") : undefined;
      const worldStarted = performance.now();
      const run =
        world === 1
          ? await runHere(source, plan, checkpointPath, env)
          : await launchWorld({
              worldSize: world,
              job: {
                strategy: o.worker!,
                plan,
                checkpointPath,
                failAtStep: o.failure?.worldSize === world ? o.failure.step : undefined,
                deadlineMs: o.timeoutMs,
              },
              timeoutMs: o.timeoutMs,
              env: o.env ?? process.env,
              log: o.log,
            });
      addWorldChecks(checks, run, reference, o, performance.now() - worldStarted);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return checks.report(name, Math.round(performance.now() - started));
}
