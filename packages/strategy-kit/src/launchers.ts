/**
 * Starting the ranks when nothing started them (DESIGN.md decision 1). Two ways, as Lightning:
 *
 * - relaunch (strategy `ddp`): the user's script runs again once per rank with the torchrun
 *   variables, through @fulgur/distributed's `launch()` (the engine of `fulgur run`), which
 *   prefixes each rank's output and stops every rank when one fails.
 * - spawn (`ddp_spawn`, `ddp_fork`): `child_process.fork` of the same script, one worker per rank,
 *   with the same variables plus an IPC channel on which a failing worker names itself, so the
 *   message names the rank that failed first even when others exit before it.
 *
 * Either way the launching process only waits: it is not a rank. A failed worker makes the launch
 * reject with WorkerFailureError naming the rank, so the user's script exits non-zero. Either way,
 * too, a rank never outlives the launching process: each watches a pipe at fd 3 that the kernel
 * closes when the launcher dies, however it dies (@fulgur/distributed's [Note: launcher watch]).
 */
import { fork, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { constants as osConstants } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { findFreePort, launch, nodeArguments, rankEnvironment, resolveLaunchOptions, type LaunchResult } from "@fulgur/distributed";

/**
 * The fd of the pipe a worker watches for the launcher's death. @fulgur/distributed's launcher
 * uses the same slot (the first after stdin, stdout and stderr); the IPC channel goes after it.
 */
const WATCH_FD = 3;

/** The message a forked worker sends its launcher when it fails (see failureGuard.ts). */
export const IPC_FAILURE_TYPE = "fulgur:ddp-failure";

export interface IpcFailureMessage {
  readonly type: typeof IPC_FAILURE_TYPE;
  readonly rank: number;
  readonly message: string;
}

export interface WorkerLaunch {
  readonly devices: number;
  readonly numNodes: number;
  readonly script: string;
  readonly argv: readonly string[];
  readonly killGraceMs: number;
  /** Where rank-prefixed output goes (default process.stdout / process.stderr). */
  readonly stdout?: NodeJS.WritableStream;
  readonly stderr?: NodeJS.WritableStream;
  /** Environment of the workers (default process.env). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** The strategy's name, which failures are reported under (default "ddp" / "ddp_spawn"). */
  readonly strategyName?: string;
}

/** A worker of a launch failed; the others were stopped. */
export class WorkerFailureError extends Error {
  override readonly name = "WorkerFailureError";
  constructor(
    readonly failedRank: number | undefined,
    readonly exitCode: number,
    message: string,
  ) {
    super(message);
  }
}

/** Flags of this process that must not reach the workers: debuggers would fight over one port. */
const DROPPED_FLAGS = /^--(inspect|inspect-brk|inspect-port|inspect-wait|debug|debug-brk)(=|$)/;
/** Flags whose value is the next argument. */
const FLAGS_WITH_VALUE = new Set(["--import", "--require", "-r", "--loader", "--experimental-loader", "--inspect-port"]);

/**
 * Node flags for the workers: this process's flags (memory limits, loaders), minus debugger
 * flags, and minus tsx's own flags for TypeScript scripts, since `nodeArguments` adds tsx itself.
 */
export function workerNodeFlags(script: string, execArgv: readonly string[] = process.execArgv): string[] {
  const ts = /\.(ts|mts|cts)$/.test(script);
  const out: string[] = [];
  for (let i = 0; i < execArgv.length; i++) {
    const flag = execArgv[i];
    const takesValue = FLAGS_WITH_VALUE.has(flag) && i + 1 < execArgv.length;
    const value = takesValue ? execArgv[i + 1] : undefined;
    if (takesValue) i++;
    if (DROPPED_FLAGS.test(flag)) continue;
    if (ts && /tsx/.test(value ?? flag)) continue;
    out.push(flag);
    if (value !== undefined) out.push(value);
  }
  return out;
}

function checkScript(script: string, what: string): string {
  if (!script) {
    throw new WorkerFailureError(
      undefined,
      1,
      `${what}: this process has no script to start again (process.argv[1] is empty, e.g. a REPL or node -e); ` +
        "run a script file, or start the ranks with `fulgur run` / torchrun",
    );
  }
  return path.resolve(script);
}

function failure(what: string, result: LaunchResult): WorkerFailureError {
  const detail = result.message ?? `the launch failed with exit code ${result.exitCode}`;
  const where = result.failedRank !== undefined ? ` (see the output prefixed [rank ${result.failedRank}])` : "";
  return new WorkerFailureError(result.failedRank, result.exitCode, `${what}: ${detail}${where}`);
}

/** What both ways of starting the ranks take from the launch request and this node's variables. */
function launchRequest(o: WorkerLaunch, script: string, env: Readonly<Record<string, string | undefined>>) {
  return {
    nprocPerNode: o.devices,
    nnodes: o.numNodes,
    nodeRank: env.NODE_RANK !== undefined ? Number(env.NODE_RANK) : 0,
    masterAddr: env.MASTER_ADDR || undefined,
    masterPort: env.MASTER_PORT ? Number(env.MASTER_PORT) : undefined,
    script,
    args: [...o.argv],
    env: { ...env },
    killGraceMs: o.killGraceMs,
  };
}

/** Strategy `ddp`: runs the script again once per rank of this node and waits for all of them. */
export async function relaunchScript(o: WorkerLaunch): Promise<void> {
  const what = o.strategyName ?? "ddp";
  const script = checkScript(o.script, what);
  const env = o.env ?? process.env;
  const result = await launch({
    ...launchRequest(o, script, env),
    nodeArgs: workerNodeFlags(script),
    stdout: o.stdout,
    stderr: o.stderr,
  });
  if (result.exitCode !== 0) throw failure(what, result);
}

interface Worker {
  readonly rank: number;
  readonly child: ChildProcess;
  exited: boolean;
}

/** Strategies `ddp_spawn` / `ddp_fork`: forks one worker per rank of this node and joins them. */
export async function forkWorkers(o: WorkerLaunch): Promise<void> {
  const what = o.strategyName ?? "ddp_spawn";
  const script = checkScript(o.script, what);
  const env = o.env ?? process.env;
  const resolved = resolveLaunchOptions(launchRequest(o, script, env));
  const masterPort = resolved.masterPort ?? (resolved.nnodes === 1 ? await findFreePort(resolved.masterAddr) : 29500);
  if (resolved.nnodes > 1 && !resolved.storeToken) {
    throw new WorkerFailureError(undefined, 1, `${what}: a job over several nodes needs the same FULGUR_STORE_TOKEN in the environment of every node`);
  }
  const storeToken = resolved.storeToken ?? randomBytes(16).toString("hex");
  // fork() takes node's flags apart from the script: everything nodeArguments puts before it.
  const execArgv = nodeArguments(script, [], workerNodeFlags(script)).slice(0, -1);
  const stdout = o.stdout ?? process.stdout;
  const stderr = o.stderr ?? process.stderr;
  const workers: Worker[] = [];
  let first: { rank: number; how: string; code: number; reported?: string } | undefined;
  let killTimer: NodeJS.Timeout | undefined;

  const stopAll = (signal: NodeJS.Signals = "SIGTERM"): void => {
    for (const w of workers) if (!w.exited) w.child.kill(signal);
    if (killTimer) return;
    killTimer = setTimeout(() => {
      for (const w of workers) if (!w.exited) w.child.kill("SIGKILL");
    }, o.killGraceMs);
    killTimer.unref();
  };
  const onSignal = (signal: NodeJS.Signals): void => stopAll(signal);
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);

  const start = (localRank: number): Promise<void> => {
    const rankEnv = rankEnvironment({ ...resolved, masterPort, storeToken }, localRank, WATCH_FD);
    const rank = Number(rankEnv.RANK);
    const child = fork(script, [...o.argv], {
      cwd: resolved.cwd,
      env: { ...env, ...rankEnv },
      execArgv,
      // fd 3: the watch pipe, never written; node finds the IPC channel at fd 4 through NODE_CHANNEL_FD.
      stdio: ["ignore", "pipe", "pipe", "pipe", "ipc"],
    });
    const w: Worker = { rank, child, exited: false };
    workers.push(w);
    const drained = [prefixLines(child.stdout!, stdout, rank), prefixLines(child.stderr!, stderr, rank)];
    child.on("message", (m: unknown) => {
      const msg = m as Partial<IpcFailureMessage>;
      if (msg?.type !== IPC_FAILURE_TYPE || typeof msg.rank !== "number") return;
      // The worker that names itself as the origin wins over whichever process exits first.
      if (!first || first.reported === undefined) first = { rank: msg.rank, how: "failed", code: 1, reported: String(msg.message) };
    });
    return new Promise<void>((resolve) => {
      const finish = (code: number | null, signal: NodeJS.Signals | null): void => {
        if (w.exited) return;
        w.exited = true;
        // Our end of the watch pipe: an open handle would keep this process alive.
        child.stdio[WATCH_FD]?.destroy();
        if (code !== 0 || signal !== null) {
          const how = signal ? `was killed by signal ${signal}` : `exited with code ${code}`;
          const exitCode = signal ? 128 + (osConstants.signals[signal] ?? 1) : (code ?? 1);
          if (!first) first = { rank, how, code: exitCode };
          stopAll();
        }
        const cap = new Promise<void>((r) => setTimeout(r, 2_000).unref());
        void Promise.race([Promise.all(drained), cap]).then(() => resolve());
      };
      child.once("exit", finish);
      child.once("error", (err) => {
        stderr.write(`[ddp_spawn] could not start rank ${rank}: ${err.message}\n`);
        finish(127, null);
      });
    });
  };

  try {
    await Promise.all(Array.from({ length: resolved.nprocPerNode }, (_, i) => start(i)));
  } finally {
    if (killTimer) clearTimeout(killTimer);
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
  if (first) {
    const detail = first.reported !== undefined ? `failed: ${first.reported}` : first.how;
    const message = `rank ${first.rank} ${detail}; the other ranks were stopped`;
    stderr.write(`[ddp_spawn] ${message}\n`);
    throw new WorkerFailureError(first.rank, first.code, `${what}: ${message} (see the output prefixed [rank ${first.rank}])`);
  }
}

/** Copies a worker's output line by line with its rank, so lines of different ranks never interleave mid-line. */
function prefixLines(input: NodeJS.ReadableStream, output: NodeJS.WritableStream, rank: number): Promise<void> {
  const lines = createInterface({ input, crlfDelay: Infinity });
  lines.on("line", (line) => output.write(`[rank ${rank}] ${line}\n`));
  return new Promise<void>((resolve) => lines.once("close", () => resolve()));
}
