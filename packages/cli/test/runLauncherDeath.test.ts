/**
 * `fulgur run` killed with SIGKILL (as the OOM killer does) leaves no rank behind: ranks that print
 * nothing and never return to the event loop are gone within 10 s (@fulgur/distributed's
 * [Note: launcher watch]). Runs the built executable, as a user does.
 */
import { spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import { BIN, tempDir } from "./helpers";

const dir = tempDir();
const started: number[] = [];
afterAll(() => {
  for (const pid of started) if (alive(pid)) process.kill(pid, "SIGKILL");
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

describe("fulgur run: no orphans", () => {
  it("SIGKILL of `fulgur run` ends every rank within 10 s", async () => {
    if (!existsSync(BIN)) throw new Error(`${BIN} is missing: build the package first (npx nx run @fulgur/cli:build)`);
    const script = join(dir, "spin.mjs");
    writeFileSync(
      script,
      `import { writeFileSync } from "node:fs";
writeFileSync(${JSON.stringify(dir)} + "/rank-" + process.env.RANK + ".pid", String(process.pid));
for (;;);
`,
    );
    const run = spawn(process.execPath, [BIN, "run", "--nproc-per-node", "2", script], { stdio: "ignore" });
    started.push(run.pid!);
    const file = (r: number) => join(dir, `rank-${r}.pid`);
    await until("both ranks started", () => [0, 1].every((r) => existsSync(file(r)) && Number(readFileSync(file(r), "utf8")) > 0), 30_000);
    const pids = [0, 1].map((r) => Number(readFileSync(file(r), "utf8")));
    started.push(...pids);
    expect(pids.every(alive)).toBe(true);
    run.kill("SIGKILL");
    await until("both ranks gone", () => !pids.some(alive), 10_000);
  });
});
