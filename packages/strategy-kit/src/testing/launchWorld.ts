/**
 * Launching one conformance world: N ranks of the kit's worker script through @fulgur/distributed's
 * `launch()` (the engine of `fulgur run`, so the ranks get the torchrun variables and a job that
 * stops every rank when one fails), with every line they print collected per rank and the
 * `FULGUR_CONFORMANCE` records parsed out of it as they arrive.
 */
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { Writable } from "node:stream";
import { fileURLToPath, pathToFileURL } from "node:url";
import { type LaunchResult, launch } from "@fulgur/distributed";
import { type ConformanceRecord, type RankJob, parseRecordLine } from "./protocol";

/** Variables a launcher sets per rank: the kit's launch sets its own, never the caller's. */
const RANK_VARIABLES = /^(RANK|WORLD_SIZE|LOCAL_RANK|LOCAL_WORLD_SIZE|NODE_RANK|GROUP_RANK|MASTER_ADDR|MASTER_PORT|FULGUR_STORE_TOKEN|FULGUR_LAUNCHER_.*|SLURM_.*)$/;
/** After a rank fails, how long the others get between SIGTERM and SIGKILL. */
const KILL_GRACE_MS = 3_000;
/** Beyond the ranks' own deadline, how long the parent waits before killing them by pid. */
const KILL_SLACK_MS = 5_000;
const RANK_LINE = /^\[rank (\d+)\] (.*)$/;

export interface RankOutput {
  readonly records: ConformanceRecord[];
  /** Every other line the rank printed, standard output and error interleaved as they arrived. */
  readonly lines: string[];
}

export interface WorldRun {
  readonly worldSize: number;
  readonly result: LaunchResult;
  readonly ranks: ReadonlyMap<number, RankOutput>;
  /** Lines of the launcher itself (which rank failed first). */
  readonly launcherLines: readonly string[];
  /** When the first rank began the failing phase, in ms since the launch began. */
  readonly failureStartedMs: number | undefined;
  /** When every rank had exited, in ms since the launch began. */
  readonly endedMs: number;
  /** True when the parent killed the ranks after `timeoutMs`. */
  readonly timedOut: boolean;
}

/** The worker script beside this file: dist/testing/worker.js when built, worker.ts when run from source. */
function workerScript(): string {
  for (const name of ["./worker.js", "./worker.ts"]) {
    const path = fileURLToPath(new URL(name, import.meta.url));
    if (existsSync(path)) return path;
  }
  throw new Error(`the conformance worker script is missing beside ${fileURLToPath(import.meta.url)}; build @fulgur/strategy-kit (npx tsup)`);
}

/** A strategy module in TypeScript needs tsx in a rank run by plain node: found from the module, else from the kit. */
function nodeArgsFor(script: string, moduleUrl: string): string[] {
  if (/\.(ts|mts|cts)$/.test(script) || !/\.(ts|mts|cts)$/.test(moduleUrl)) return [];
  const bases = [moduleUrl.startsWith("file:") ? moduleUrl : undefined, import.meta.url].filter((b): b is string => b !== undefined);
  for (const base of bases) {
    try {
      return ["--import", pathToFileURL(createRequire(base).resolve("tsx")).href];
    } catch {
      // not resolvable from here; try the next base
    }
  }
  throw new Error(`the strategy module ${moduleUrl} is TypeScript, and tsx is not installed to run it in the ranks; install tsx or point at built JavaScript`);
}

/** Writes each complete line to `onLine`. */
function lineSink(onLine: (line: string) => void): Writable {
  let pending = "";
  return new Writable({
    write(chunk: Buffer | string, _encoding, done) {
      pending += chunk.toString();
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) onLine(line);
      done();
    },
    final(done) {
      if (pending) onLine(pending);
      done();
    },
  });
}

export interface LaunchWorldOptions {
  readonly worldSize: number;
  readonly job: RankJob;
  readonly timeoutMs: number;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly log?: (line: string) => void;
}

export async function launchWorld(o: LaunchWorldOptions): Promise<WorldRun> {
  const script = workerScript();
  const started = performance.now();
  const ranks = new Map<number, RankOutput>();
  const launcherLines: string[] = [];
  const pids = new Set<number>();
  let failureStartedMs: number | undefined;
  const rankOutput = (rank: number): RankOutput => {
    let out = ranks.get(rank);
    if (!out) ranks.set(rank, (out = { records: [], lines: [] }));
    return out;
  };
  const onLine = (line: string): void => {
    o.log?.(line);
    const parsed = parseRecordLine(line);
    if (parsed) {
      rankOutput(parsed.rank).records.push(parsed.record);
      if (parsed.record.kind === "rank") pids.add(parsed.record.pid);
      if (parsed.record.kind === "failure-start") failureStartedMs ??= performance.now() - started;
      return;
    }
    const m = RANK_LINE.exec(line);
    if (m) rankOutput(Number(m[1])).lines.push(m[2]);
    else launcherLines.push(line);
  };
  const env = Object.fromEntries(Object.entries(o.env).filter(([k]) => !RANK_VARIABLES.test(k)));
  let timedOut = false;
  // The ranks end themselves at their deadline unless stuck in synchronous code; then they are
  // killed here, by the pids they reported (nothing else of theirs is known to this process).
  const killer = setTimeout(() => {
    timedOut = true;
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // already gone
      }
    }
  }, o.timeoutMs + KILL_SLACK_MS);
  killer.unref();
  let result: LaunchResult;
  const stdout = lineSink(onLine);
  const stderr = lineSink(onLine);
  try {
    result = await launch({
      nprocPerNode: o.worldSize,
      script,
      args: [JSON.stringify(o.job)],
      env,
      nodeArgs: nodeArgsFor(script, o.job.strategy.module),
      killGraceMs: KILL_GRACE_MS,
      stdout,
      stderr,
      // The test runner that called the kit owns this process's signals.
      forwardSignals: false,
    });
  } finally {
    clearTimeout(killer);
    stdout.end();
    stderr.end();
  }
  return {
    worldSize: o.worldSize,
    result,
    ranks,
    launcherLines,
    failureStartedMs,
    endedMs: performance.now() - started,
    timedOut: timedOut || result.exitCode === 124,
  };
}
