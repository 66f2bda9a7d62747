/**
 * Turning what the ranks of one world reported into its checks: training against one device (b),
 * the checkpoint round trip (c) and, in the world chosen for it, the injected failure (d). A rank
 * that reported nothing is explained with the last lines it printed.
 */
import type { CheckList } from "./report";
import type { ResolvedConformanceOptions } from "./options";
import { compareTraining, type RankTraining } from "./compare";
import type { WorldRun } from "./launchWorld";
import { type CheckpointRecord, type ConformanceRecord, type RankRecord, type TrainRecord, injectedFailureMessage } from "./protocol";

const TAIL_LINES = 12;

export function checkTitles(o: ResolvedConformanceOptions, world: number): { train: string; checkpoint: string; failure: string } {
  const failing = world - 1;
  const seconds = o.failure ? o.failure.withinMs / 1000 : 0;
  return {
    train:
      `world ${world}: ${o.steps} steps of the tiny GPT (accumulate ${o.accumulate}, clip ${o.gradientClipVal}, ${o.precision}) ` +
      `match one device within ${o.tolerance}`,
    checkpoint: `world ${world}: module and optimizer state round-trip through the strategy's saveCheckpoint and loadCheckpoint`,
    failure: `world ${world}: a throw on rank ${failing} at step ${o.failure?.step ?? 0} ends every rank within ${seconds} s, naming rank ${failing}`,
  };
}

function find<K extends ConformanceRecord["kind"]>(records: readonly ConformanceRecord[], kind: K): Extract<ConformanceRecord, { kind: K }> | undefined {
  return records.find((r) => r.kind === kind) as Extract<ConformanceRecord, { kind: K }> | undefined;
}

/** Why rank `rank` has no record of `kind`: its reported error, else the end of what it printed. */
function silence(run: WorldRun, rank: number, what: string): string {
  const out = run.ranks.get(rank);
  const error = out && find(out.records, "error");
  if (error) return `rank ${rank} reported no ${what}: its ${error.phase} phase threw ${error.message}`;
  const tail = (out?.lines ?? []).slice(-TAIL_LINES);
  const ended = run.timedOut ? "the world ran out of time" : (run.result.message ?? `the world exited with code ${run.result.exitCode}`);
  return `rank ${rank} reported no ${what} (${ended})${tail.length ? `; its last lines:\n${tail.map((l) => `  ${l}`).join("\n")}` : ""}`;
}

export function addWorldChecks(checks: CheckList, run: WorldRun, reference: TrainRecord, o: ResolvedConformanceOptions, ms: number): void {
  const world = run.worldSize;
  const titles = checkTitles(o, world);
  const failureWorld = o.failure?.worldSize === world;

  // (b) training
  const problems: string[] = [];
  const trained: RankTraining[] = [];
  const layouts = new Map<number, RankRecord>();
  for (let rank = 0; rank < world; rank++) {
    const records = run.ranks.get(rank)?.records ?? [];
    const layout = find(records, "rank");
    const train = find(records, "train");
    if (!layout || !train) {
      problems.push(silence(run, rank, layout ? "training results" : "setup"));
      continue;
    }
    layouts.set(rank, layout);
    problems.push(...layout.problems.map((p) => `rank ${rank}: ${p}`));
    trained.push({ rank, layout, train });
  }
  let summary = "";
  if (problems.length === 0) {
    const comparison = compareTraining(reference, trained, o);
    problems.push(...comparison.problems);
    summary = comparison.summary;
  }
  if (!failureWorld && run.result.exitCode !== 0 && problems.length === 0) {
    problems.push(`every rank reported its results, but the world did not end cleanly: ${run.result.message ?? `exit code ${run.result.exitCode}`} (teardown?)`);
  }
  checks.add(`train@${world}`, titles.train, problems, summary, Math.round(ms));

  // (c) checkpoint
  if (o.checkpoint) {
    const cp: string[] = [];
    let tensors = 0;
    for (let rank = 0; rank < world; rank++) {
      const rec: CheckpointRecord | undefined = find(run.ranks.get(rank)?.records ?? [], "checkpoint");
      if (!rec) cp.push(silence(run, rank, "checkpoint round trip"));
      else {
        tensors = rec.tensors + (rec.optimizerTensors ?? 0);
        cp.push(...rec.problems.map((p) => `rank ${rank}: ${p}`));
      }
    }
    checks.add(`checkpoint@${world}`, titles.checkpoint, cp, `${tensors} tensors equal after the round trip on every rank`, 0);
  }

  // (d) failure
  if (failureWorld) addFailureCheck(checks, run, layouts, o, titles.failure);
}

function addFailureCheck(checks: CheckList, run: WorldRun, layouts: ReadonlyMap<number, RankRecord>, o: ResolvedConformanceOptions, title: string): void {
  const world = run.worldSize;
  const failing = world - 1;
  const step = o.failure!.step;
  const withinMs = o.failure!.withinMs;
  const message = injectedFailureMessage(failing, step);
  const id = `failure@${world}`;
  if (run.failureStartedMs === undefined) {
    checks.add(id, title, ["no rank reached the failing phase (see the training and checkpoint checks)"], "", 0);
    return;
  }
  const problems: string[] = [];
  const tookMs = Math.round(run.endedMs - run.failureStartedMs);
  if (run.timedOut || tookMs > withinMs) problems.push(`the ranks were still running ${tookMs} ms after the failing phase began (bound: ${withinMs} ms): a rank hung`);
  if (run.result.exitCode === 0) problems.push("every rank exited with code 0: the injected error was swallowed");
  else if (run.result.failedRank !== failing) {
    problems.push(`the launcher saw rank ${run.result.failedRank} end first (${run.result.message}); the failure started on rank ${failing}`);
  }
  const printed = (rank: number): boolean => (run.ranks.get(rank)?.lines ?? []).some((l) => l.includes(message));
  if (!printed(failing)) problems.push(`rank ${failing} never printed its error ("${message}")`);
  // Decision 12: an ExceptionAware strategy makes the failure reach every rank, which names it.
  const unaware = Array.from({ length: world - 1 }, (_, r) => r).filter((r) => !printed(r));
  let note = unaware.length === 0 ? `every rank named rank ${failing}'s failure` : `rank(s) ${unaware.join(", ")} ended without naming it`;
  if (unaware.length > 0 && o.failure!.everyRankNamesIt) {
    problems.push(
      `rank(s) ${unaware.join(", ")} ended without naming the failure of rank ${failing} (nothing they printed carries "${message}")` +
        (layouts.get(0)?.exceptionAware ? "" : "; the strategy is not ExceptionAware, so nothing tells them"),
    );
  } else if (unaware.length > 0) note += " (stopped by the launcher first; everyRankNamesIt: true requires it)";
  checks.add(id, title, problems, `every rank ended ${tookMs} ms after the failing phase began; ${run.result.message ?? ""}; ${note}`, tookMs);
}
