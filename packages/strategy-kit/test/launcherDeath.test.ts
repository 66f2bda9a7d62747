/**
 * No orphans from the strategies' own launchers: a script that started its ranks itself, by
 * re-running the script (`ddp`, through @fulgur/distributed's launch()) or by forking workers
 * (`ddp_spawn`), is killed with SIGKILL; every rank is gone within 10 s, though they print nothing
 * and never return to the event loop. The IPC channel of forked workers, moved to fd 4 for the
 * watch pipe, still carries a worker's failure report.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { nodeArguments } from "@fulgur/distributed";
import { afterEach, describe, expect, it, vi } from "vitest";

const SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), "fixtures", "ddpScript.ts");

const started: number[] = [];
const dirs: string[] = [];
afterEach(() => {
  for (const pid of started.splice(0)) if (alive(pid)) process.kill(pid, "SIGKILL");
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

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

function script(how: "ddp" | "ddp_spawn", mode: string): { launcher: ChildProcess; dir: string; output: () => string } {
  const dir = mkdtempSync(path.join(os.tmpdir(), "fulgur-launcher-death-"));
  dirs.push(dir);
  const launcher = spawn(process.execPath, nodeArguments(SCRIPT, [how, dir, mode]), { stdio: ["ignore", "pipe", "pipe"] });
  started.push(launcher.pid!);
  let out = "";
  launcher.stdout!.on("data", (d: Buffer) => (out += d));
  launcher.stderr!.on("data", (d: Buffer) => (out += d));
  return { launcher, dir, output: () => out };
}

async function rankPids(dir: string): Promise<number[]> {
  const file = (r: number) => path.join(dir, `rank-${r}.pid`);
  await until("both ranks started", () => [0, 1].every((r) => existsSync(file(r)) && Number(readFileSync(file(r), "utf8")) > 0), 30_000);
  const pids = [0, 1].map((r) => Number(readFileSync(file(r), "utf8")));
  started.push(...pids);
  return pids;
}

describe("ranks do not outlive the script that launched them", () => {
  for (const how of ["ddp", "ddp_spawn"] as const) {
    it(`${how}: SIGKILL of the launching script ends both ranks within 10 s`, async () => {
      const { launcher, dir } = script(how, "spin");
      const pids = await rankPids(dir);
      expect(pids.every(alive)).toBe(true);
      launcher.kill("SIGKILL");
      await until("both ranks gone", () => !pids.some(alive), 10_000);
    });
  }

  it("ddp_spawn: a worker's failure report still arrives over IPC (now at fd 4)", async () => {
    const { launcher, output } = script("ddp_spawn", "fail");
    const code = await new Promise<number | null>((resolve) => launcher.on("exit", resolve));
    expect(code).toBe(1);
    expect(output()).toContain("LAUNCH FAILED ddp_spawn: rank 1 failed: boom on purpose; the other ranks were stopped");
  });
});
