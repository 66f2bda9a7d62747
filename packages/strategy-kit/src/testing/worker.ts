/**
 * A rank of a world the conformance kit launched (its own tsup entry, dist/testing/worker.js). The
 * launcher gave it the torchrun variables; its one argument is the job as JSON. It imports the
 * strategy the author named, runs the phases and prints one `FULGUR_CONFORMANCE <json>` line per
 * phase. An error is rethrown after it is reported, so the process ends as a user's rank would.
 */
import type { Strategy } from "@fulgur/core";
import { detectClusterEnvironment } from "@fulgur/distributed";
import { type ConformanceRecord, RECORD_PREFIX, type RankJob } from "./protocol";
import { runRank } from "./rank";
import { strategyFromModule } from "./strategySource";

const emit = (record: ConformanceRecord): void => void process.stdout.write(`${RECORD_PREFIX}${JSON.stringify(record)}\n`);

const job = JSON.parse(process.argv[2] ?? "null") as RankJob | null;
if (!job || typeof job.strategy?.module !== "string") {
  throw new TypeError("conformance worker: expected the job as JSON in the first argument; this script is started by runStrategyConformance");
}

// A rank stuck in an await (a collective that never completes) still ends; one stuck in synchronous
// code is killed by the parent, which knows every rank's pid from its first record.
setTimeout(() => {
  process.stderr.write(`conformance worker: still running after ${job.deadlineMs} ms; exiting\n`);
  process.exit(124);
}, job.deadlineMs).unref();

let strategy: Strategy;
try {
  strategy = await strategyFromModule(job.strategy);
} catch (err) {
  emit({ kind: "error", phase: "import", message: (err as Error).message });
  throw err;
}
await runRank(strategy, detectClusterEnvironment(), { plan: job.plan, checkpointPath: job.checkpointPath, failAtStep: job.failAtStep }, emit);
