/**
 * One rank of a conformance world, in a launched process or (world 1) in the caller's: set the
 * strategy up as the Trainer would, report where it stands, train, round-trip a checkpoint and, in
 * the world chosen for it, train again until the last rank throws. Errors are handled as the
 * Trainer handles them: the strategy hears of it (`onException`), is torn down, and the error is
 * rethrown, so a failure travels exactly as it would in a user's job (DESIGN.md decision 12).
 */
import {
  type ClusterEnvironment,
  type Precision,
  type Strategy,
  hasDataParallelLayout,
  isExceptionAware,
} from "@fulgur/core";
import { createPrecision } from "../precision/precisions";
import { conformanceCpuAccelerator } from "./cpuAccelerator";
import { roundTripCheckpoint } from "./checkpointRoundTrip";
import type { ConformanceRecord, RankRecord, TrainingPlan } from "./protocol";
import { type PreparedModel, dataParallelOf, prepareModel, train } from "./trainingLoop";

export interface RankPhases {
  readonly plan: TrainingPlan;
  readonly checkpointPath?: string;
  readonly failAtStep?: number;
}

/** What is wrong with the rank layout a strategy reports after setup (DESIGN.md decision 13's DataParallelLayout included). */
function layoutProblems(s: Strategy, cluster: ClusterEnvironment): string[] {
  const problems: string[] = [];
  const expect = (what: string, got: unknown, want: unknown): void => {
    if (got !== want) problems.push(`${what} is ${JSON.stringify(got)}; the cluster environment says ${JSON.stringify(want)}`);
  };
  expect("worldSize", s.worldSize, cluster.worldSize());
  expect("globalRank", s.globalRank, cluster.globalRank());
  expect("localRank", s.localRank, cluster.localRank());
  expect("isGlobalZero", s.isGlobalZero, cluster.globalRank() === 0);
  if (typeof s.rootDevice !== "string" || s.rootDevice === "") problems.push(`rootDevice is ${JSON.stringify(s.rootDevice)}; expected a device string`);
  const claimsLayout = "dataParallelRank" in s || "dataParallelSize" in s;
  if (claimsLayout && !hasDataParallelLayout(s)) {
    const l = s as unknown as Record<string, unknown>;
    problems.push(
      `it has dataParallelRank ${JSON.stringify(l.dataParallelRank)} and dataParallelSize ${JSON.stringify(l.dataParallelSize)}, ` +
        "which are not a layout (two integers, size >= 1): hasDataParallelLayout is false and the Trainer ignores them",
    );
  }
  if (hasDataParallelLayout(s)) {
    const { rank, size } = dataParallelOf(s);
    if (size > s.worldSize || s.worldSize % size !== 0) problems.push(`dataParallelSize ${size} does not divide worldSize ${s.worldSize}`);
    if (rank < 0 || rank >= size) problems.push(`dataParallelRank ${rank} is outside 0..${size - 1}`);
  }
  return problems;
}

function rankRecord(s: Strategy, cluster: ClusterEnvironment): RankRecord {
  return {
    kind: "rank",
    pid: process.pid,
    strategy: s.name,
    globalRank: s.globalRank,
    localRank: s.localRank,
    worldSize: s.worldSize,
    isGlobalZero: s.isGlobalZero,
    rootDevice: s.rootDevice,
    dataParallel: dataParallelOf(s),
    exceptionAware: isExceptionAware(s),
    problems: layoutProblems(s, cluster),
  };
}

/** Runs the phases on `strategy`, reporting each through `emit`; tears the strategy down at the end. */
export async function runRank(
  strategy: Strategy,
  cluster: ClusterEnvironment,
  phases: RankPhases,
  emit: (record: ConformanceRecord) => void,
): Promise<void> {
  const precision: Precision = createPrecision(phases.plan.precision);
  let phase = "setup";
  try {
    await strategy.setup({
      accelerator: conformanceCpuAccelerator(),
      precision,
      cluster,
      devices: cluster.worldSize(),
      numNodes: 1,
    });
    emit(rankRecord(strategy, cluster));
    phase = "train";
    let current: PreparedModel = await prepareModel(strategy, precision, phases.plan.seed);
    emit(await train(strategy, precision, current, { plan: phases.plan }));
    if (phases.checkpointPath !== undefined) {
      phase = "checkpoint";
      const trip = await roundTripCheckpoint(strategy, precision, current, { path: phases.checkpointPath, seed: phases.plan.seed });
      current = trip.fresh;
      emit(trip.record);
    }
    if (phases.failAtStep !== undefined) {
      phase = "failure";
      emit({ kind: "failure-start" });
      await train(strategy, precision, current, { plan: phases.plan, failAtStep: phases.failAtStep });
    }
  } catch (err) {
    emit({ kind: "error", phase, message: err instanceof Error ? `${err.name}: ${err.message}` : String(err) });
    if (isExceptionAware(strategy)) await strategy.onException(err);
    throw err;
  } finally {
    await strategy.teardown();
  }
}
