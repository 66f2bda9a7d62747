/**
 * The process launcher behind `fulgur run` (torchrun's job, DESIGN.md decision 1): it starts one
 * process per rank on this node with the torchrun variables and the job's store token, prefixes
 * every line they print with `[rank N]`, and treats the ranks as one job — when one fails, the
 * others are stopped (SIGTERM, then SIGKILL after a grace period) and the launch ends with the
 * failing rank's exit code and a sentence naming it. A job whose rank died must never be left
 * half-alive holding GPUs; nor may ranks outlive the launcher itself ([Note: launcher watch] in
 * launcherWatch.ts).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { stat } from "node:fs/promises";
import { createRequire } from "node:module";
import { constants as osConstants } from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { pathToFileURL } from "node:url";
import { findFreePort, isPortFree } from "../cluster/freePort";
import { DistributedArgumentError } from "../errors";
import { LAUNCHER_WATCH_FD, launcherWatchEnvironment, launcherWatchImport } from "./launcherWatch";
import { optionError, resolveLaunchOptions, type LaunchOptions, type ResolvedLaunchOptions } from "./options";

export interface LaunchResult {
  /** What `fulgur run` should exit with: 0, the failing rank's code, or 128 + signal number. */
  readonly exitCode: number;
  /** The global rank that failed first, if any. */
  readonly failedRank?: number;
  /** The signal that killed the failing rank, or that interrupted the launcher. */
  readonly signal?: NodeJS.Signals;
  /** A sentence for the user; absent on success. */
  readonly message?: string;
}

/**
 * Everything the ranks of this node get in their environment; exported for tests, the CLI's dry
 * runs and the strategies' own launchers. With `watchFd`, also the variables that make the rank
 * watch this process through the pipe its spawner puts at that fd ([Note: launcher watch]); only
 * pass it when that pipe is really there.
 */
export function rankEnvironment(
  o: ResolvedLaunchOptions & { masterPort: number; storeToken: string },
  localRank: number,
  watchFd?: number,
): Record<string, string> {
  const worldSize = o.nprocPerNode * o.nnodes;
  const rank = o.nodeRank * o.nprocPerNode + localRank;
  return {
    ...(watchFd !== undefined ? launcherWatchEnvironment(watchFd) : {}),
    WORLD_SIZE: String(worldSize),
    RANK: String(rank),
    LOCAL_RANK: String(localRank),
    LOCAL_WORLD_SIZE: String(o.nprocPerNode),
    NODE_RANK: String(o.nodeRank),
    GROUP_RANK: String(o.nodeRank),
    MASTER_ADDR: o.masterAddr,
    MASTER_PORT: String(o.masterPort),
    FULGUR_STORE_TOKEN: o.storeToken,
  };
}

/**
 * The node command line of a script: TypeScript goes through tsx, resolved from this package so the
 * user's project needs none. The launcher-watch preload comes first; it does nothing in a process
 * whose environment does not ask for it ([Note: launcher watch]).
 */
export function nodeArguments(script: string, args: readonly string[], nodeArgs: readonly string[] = []): string[] {
  const ts = /\.(ts|mts|cts)$/.test(script);
  return [...nodeArgs, "--import", launcherWatchImport(), ...(ts ? ["--import", tsxLoaderUrl()] : []), script, ...args];
}

function tsxLoaderUrl(): string {
  try {
    return pathToFileURL(createRequire(import.meta.url).resolve("tsx")).href;
  } catch {
    return "tsx";
  }
}

/**
 * Validates the options, checks the script and (on node 0) the master port, then runs the ranks of
 * this node until they all exit. Invalid options reject before anything is spawned.
 */
export async function launch(options: LaunchOptions): Promise<LaunchResult> {
  const o = resolveLaunchOptions(options);
  const script = path.resolve(o.cwd, o.script);
  const info = await stat(script).catch(() => undefined);
  if (!info?.isFile()) throw optionError("script", o.script, `an existing script file (${script} does not exist)`);

  let masterPort = o.masterPort;
  if (masterPort === undefined) masterPort = o.nnodes === 1 ? await findFreePort(o.masterAddr).catch(() => 29500) : 29500;
  if (o.nodeRank === 0 && !(await isPortFree(o.masterAddr, masterPort))) {
    throw optionError(
      "masterPort",
      masterPort,
      `a free port: ${masterPort} on ${o.masterAddr} is already in use or cannot be bound there ` +
        `(choose another with --master-port / MASTER_PORT, or check --master-addr is an address of this node)`,
    );
  }
  if (o.nnodes > 1 && o.storeToken === undefined) {
    throw new DistributedArgumentError(
      `launch option storeToken: a job of nnodes=${o.nnodes} needs the same FULGUR_STORE_TOKEN on every node; ` +
        `set it to one shared secret (e.g. \`openssl rand -hex 16\`) in the environment of each node's launcher`,
    );
  }
  const storeToken = o.storeToken ?? randomBytes(16).toString("hex");
  return new Job({ ...o, script, masterPort, storeToken }).run();
}

interface Rank {
  readonly rank: number;
  readonly localRank: number;
  readonly child: ChildProcess;
  exited: boolean;
}

/** One launch: the children of this node and what happened to them. */
class Job {
  private readonly ranks: Rank[] = [];
  private failure: { rank: number; code: number | null; signal: NodeJS.Signals | null } | undefined;
  private interrupted: NodeJS.Signals | undefined;
  private killTimer: NodeJS.Timeout | undefined;

  constructor(private readonly o: ResolvedLaunchOptions & { masterPort: number; storeToken: string }) {}

  async run(): Promise<LaunchResult> {
    const onSignal = (signal: NodeJS.Signals) => this.interrupt(signal);
    if (this.o.forwardSignals) {
      process.on("SIGINT", onSignal);
      process.on("SIGTERM", onSignal);
    }
    try {
      const closed: Promise<void>[] = [];
      for (let local = 0; local < this.o.nprocPerNode; local++) closed.push(this.start(local));
      await Promise.all(closed);
    } finally {
      if (this.killTimer) clearTimeout(this.killTimer);
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
    }
    return this.result();
  }

  /** Spawns one rank; resolves when it has exited and its output is drained. */
  private start(localRank: number): Promise<void> {
    const o = this.o;
    const env = { ...o.env, ...rankEnvironment(o, localRank, LAUNCHER_WATCH_FD) };
    const rank = Number(env.RANK);
    const child = spawn(process.execPath, nodeArguments(o.script, o.args, o.nodeArgs), {
      cwd: o.cwd,
      env,
      // fd 3: the pipe the rank watches for this process's death ([Note: launcher watch]).
      stdio: ["ignore", "pipe", "pipe", "pipe"],
    });
    const entry: Rank = { rank, localRank, child, exited: false };
    this.ranks.push(entry);
    const drained = [prefixLines(child.stdout!, o.stdout, rank), prefixLines(child.stderr!, o.stderr, rank)];
    return new Promise<void>((resolve) => {
      const finish = (code: number | null, signal: NodeJS.Signals | null) => {
        if (entry.exited) return;
        entry.exited = true;
        // Our end of the watch pipe: nothing more to watch, and an open handle would keep us alive.
        child.stdio[LAUNCHER_WATCH_FD]?.destroy();
        if ((code !== 0 || signal !== null) && !this.failure && !this.interrupted) {
          this.failure = { rank, code, signal };
          this.stopAll();
        }
        // A grandchild holding the pipes open must not keep the job alive: wait for output at most 2 s.
        const cap = new Promise<void>((r) => setTimeout(r, 2_000).unref());
        void Promise.race([Promise.all(drained), cap]).then(() => resolve());
      };
      child.once("exit", finish);
      child.once("error", (err) => {
        o.stderr.write(`[fulgur run] could not start rank ${rank}: ${err.message}\n`);
        finish(127, null);
      });
    });
  }

  /** SIGTERM to every live rank now, SIGKILL to the ones still alive after the grace period. */
  private stopAll(signal: NodeJS.Signals = "SIGTERM"): void {
    for (const r of this.ranks) if (!r.exited) r.child.kill(signal);
    if (this.killTimer) return;
    this.killTimer = setTimeout(() => {
      for (const r of this.ranks) if (!r.exited) r.child.kill("SIGKILL");
    }, this.o.killGraceMs);
    this.killTimer.unref();
  }

  private interrupt(signal: NodeJS.Signals): void {
    if (!this.interrupted) this.interrupted = signal;
    this.stopAll(signal);
  }

  private result(): LaunchResult {
    const f = this.failure;
    if (f) {
      const how = f.signal ? `was killed by signal ${f.signal}` : `exited with code ${f.code}`;
      const exitCode = f.signal ? 128 + (osConstants.signals[f.signal] ?? 1) : (f.code ?? 1);
      const message = `rank ${f.rank} ${how}; the other ranks were stopped`;
      this.o.stderr.write(`[fulgur run] ${message}\n`);
      return { exitCode, failedRank: f.rank, signal: f.signal ?? undefined, message };
    }
    if (this.interrupted) {
      const message = `interrupted by ${this.interrupted}; the signal was forwarded to every rank`;
      this.o.stderr.write(`[fulgur run] ${message}\n`);
      return { exitCode: 128 + (osConstants.signals[this.interrupted] ?? 1), signal: this.interrupted, message };
    }
    return { exitCode: 0 };
  }
}

/** Copies a rank's output line by line with its prefix, so lines of different ranks never interleave mid-line. */
function prefixLines(input: NodeJS.ReadableStream, output: NodeJS.WritableStream, rank: number): Promise<void> {
  const lines = createInterface({ input, crlfDelay: Infinity });
  lines.on("line", (line) => output.write(`[rank ${rank}] ${line}\n`));
  return new Promise<void>((resolve) => lines.once("close", () => resolve()));
}
