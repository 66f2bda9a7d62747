/**
 * No orphans ([Note: launcher watch]): when the launcher of `fulgur run` / `launch()` is killed
 * with SIGKILL, as the OOM killer does, every rank it started is gone within seconds, also ranks
 * that print nothing, ranks whose main thread never returns to the event loop and ranks that ignore
 * SIGTERM; on two "nodes" (two agents of one nnodes=2 job on this machine), killing one agent ends
 * that node's ranks only.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it, vi } from "vitest";
import { findFreePort } from "../src/cluster/freePort";
import { nodeArguments } from "../src/launcher/launcher";
import type { LaunchOptions } from "../src/launcher/options";

const FIX = path.join(path.dirname(fileURLToPath(import.meta.url)), "fixtures");
const BUSY = path.join(FIX, "busyRank.mjs");

/** Everything a test started, killed by pid afterwards whatever the outcome. */
const started: number[] = [];
const dirs: string[] = [];
afterEach(() => {
  for (const pid of started.splice(0)) if (alive(pid)) process.kill(pid, "SIGKILL");
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(path.join(os.tmpdir(), "fulgur-launcher-death-"));
  dirs.push(d);
  return d;
}

/** process.kill(pid, 0) succeeds, and it is no zombie (orphans' zombies linger where PID 1 does not reap). */
const alive = (pid: number): boolean => {
  try {
    return process.kill(pid, 0) && !readFileSync(`/proc/${pid}/stat`, "utf8").includes(") Z ");
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "ENOENT";
  }
};

/** Polls `check` every 50 ms until it holds; fails naming `what` after `ms`. */
const until = (what: string, check: () => boolean, ms: number): Promise<void> =>
  vi.waitFor(() => expect(check(), what).toBe(true), { timeout: ms, interval: 50 });

/** Starts `launch()` in its own process (the stand-in for `fulgur run`), whose ranks run busyRank. */
function agent(dir: string, options: Partial<LaunchOptions>, mode = "spin"): ChildProcess {
  const opts = { nprocPerNode: 2, script: BUSY, args: [dir, mode], ...options };
  const child = spawn(process.execPath, nodeArguments(path.join(FIX, "agent.ts"), [JSON.stringify(opts)]), { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  child.stderr!.on("data", (d: Buffer) => (err += d));
  child.on("exit", (code) => {
    if (code !== null && code !== 0 && err) console.error(`agent exited ${code}: ${err}`);
  });
  started.push(child.pid!);
  return child;
}

/** The pids the ranks recorded, once `count` of them have. */
async function rankPids(dir: string, ranks: number[]): Promise<Map<number, number>> {
  await until(`ranks ${ranks.join(", ")} started`, () => ranks.every((r) => existsSync(path.join(dir, `rank-${r}.pid`))), 30_000);
  // A pid file may be seen before its content is written: wait for every one to hold a number.
  const read = (r: number): number => Number(readFileSync(path.join(dir, `rank-${r}.pid`), "utf8"));
  await until("pid files written", () => ranks.every((r) => read(r) > 0), 5_000);
  const pids = new Map(ranks.map((r) => [r, read(r)]));
  started.push(...pids.values());
  return pids;
}

describe("ranks do not outlive their launcher", () => {
  it("SIGKILL of the launcher ends every rank within 10 s, though they print nothing and never yield", async () => {
    const dir = tempDir();
    const launcher = agent(dir, { masterPort: await findFreePort() });
    const pids = await rankPids(dir, [0, 1]);
    for (const pid of pids.values()) expect(alive(pid)).toBe(true);
    launcher.kill("SIGKILL");
    await until("every rank gone", () => [...pids.values()].every((p) => !alive(p)), 10_000);
  });

  it("a rank that ignores SIGTERM is killed a few seconds later", async () => {
    const dir = tempDir();
    const launcher = agent(dir, { nprocPerNode: 1, masterPort: await findFreePort() }, "ignore-term");
    const pids = await rankPids(dir, [0]);
    launcher.kill("SIGKILL");
    await until("the rank gone", () => !alive(pids.get(0)!), 10_000);
  });

  it("two nodes: killing node 1's agent ends node 1's ranks; node 0's go when their own agent does", async () => {
    const dir = tempDir();
    const job = { nnodes: 2, masterPort: await findFreePort(), env: { ...process.env, FULGUR_STORE_TOKEN: "two-node-secret" } };
    const node0 = agent(dir, { ...job, nodeRank: 0 });
    const node1 = agent(dir, { ...job, nodeRank: 1 });
    const pids = await rankPids(dir, [0, 1, 2, 3]);
    node1.kill("SIGKILL");
    await until("node 1's ranks (2, 3) gone", () => !alive(pids.get(2)!) && !alive(pids.get(3)!), 10_000);
    expect(alive(pids.get(0)!) && alive(pids.get(1)!), "node 0's ranks still run: their agent is alive").toBe(true);
    node0.kill("SIGKILL");
    await until("node 0's ranks (0, 1) gone", () => !alive(pids.get(0)!) && !alive(pids.get(1)!), 10_000);
  });

  it("the rank says why on stderr: 'rank 1: the launcher (pid N) is gone; exiting'", async () => {
    const dir = tempDir();
    const errFile = path.join(dir, "rank.err");
    const parent = spawn(process.execPath, nodeArguments(path.join(FIX, "watchParent.ts"), [BUSY, dir, errFile]), { stdio: ["ignore", "pipe", "inherit"] });
    started.push(parent.pid!);
    const pids = await rankPids(dir, [1]);
    parent.kill("SIGKILL");
    await until("the rank gone", () => !alive(pids.get(1)!), 10_000);
    expect(readFileSync(errFile, "utf8")).toBe(`rank 1: the launcher (pid ${parent.pid}) is gone; exiting\n`);
  });

  it("the watch leaves no trace in a finished job: ranks and the launcher exit as before", async () => {
    const dir = tempDir();
    const launcher = spawn(process.execPath, nodeArguments(path.join(FIX, "agent.ts"), [JSON.stringify({ nprocPerNode: 2, script: path.join(FIX, "echo.mjs") })]), {
      stdio: ["ignore", "pipe", "pipe"],
    });
    started.push(launcher.pid!);
    const start = Date.now();
    const code = await new Promise<number | null>((resolve) => launcher.on("exit", resolve));
    expect(code).toBe(0);
    expect(Date.now() - start).toBeLessThan(8_000);
    expect(readdirSync(dir)).toEqual([]);
  });
});
