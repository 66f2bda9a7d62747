/**
 * The launcher: rank variables and prefixed output, a failing or killed rank ending the job with
 * its code and name, signal forwarding, and option errors raised before anything is spawned.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { PassThrough } from "node:stream";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { launch, nodeArguments, type LaunchResult } from "../src/launcher/launcher";
import { resolveLaunchOptions, type LaunchOptions } from "../src/launcher/options";
import { DistributedArgumentError } from "../src/errors";
import { findFreePort } from "../src/cluster/freePort";

const FIX = path.join(path.dirname(fileURLToPath(import.meta.url)), "fixtures");
const tmp = mkdtempSync(path.join(os.tmpdir(), "fulgur-launcher-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

async function run(options: Omit<LaunchOptions, "stdout" | "stderr">): Promise<{ result: LaunchResult; out: string; err: string; ms: number }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = "";
  let err = "";
  stdout.on("data", (d) => (out += d));
  stderr.on("data", (d) => (err += d));
  const started = Date.now();
  const result = await launch({ forwardSignals: false, ...options, stdout, stderr });
  return { result, out, err, ms: Date.now() - started };
}

describe("launch", () => {
  it("runs every rank with the torchrun variables and prefixes each output line", async () => {
    const port = await findFreePort();
    const { result, out, err } = await run({ nprocPerNode: 2, script: path.join(FIX, "echo.mjs"), args: ["a", "b c"], masterPort: port });
    expect(result).toEqual({ exitCode: 0 });
    for (const r of [0, 1]) {
      expect(out).toContain(
        `[rank ${r}] WORLD_SIZE=2 RANK=${r} LOCAL_RANK=${r} LOCAL_WORLD_SIZE=2 NODE_RANK=0 GROUP_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=${port}\n`,
      );
      expect(out).toContain(`[rank ${r}] token=32 args=a,b c\n`);
      expect(out).toContain(`[rank ${r}] no newline from ${r}\n`);
      expect(err).toContain(`[rank ${r}] to stderr from ${r}\n`);
    }
    // Every line is whole and prefixed: no interleaving mid-line.
    for (const line of out.trimEnd().split("\n")) expect(line).toMatch(/^\[rank [01]\] /);
  });

  it("ranks of node 1 of 2 get global ranks after node 0's", async () => {
    const { out } = await run({
      nprocPerNode: 2,
      nnodes: 2,
      nodeRank: 1,
      script: path.join(FIX, "echo.mjs"),
      env: { ...process.env, FULGUR_STORE_TOKEN: "shared-secret" },
    });
    expect(out).toContain("[rank 2] WORLD_SIZE=4 RANK=2 LOCAL_RANK=0 LOCAL_WORLD_SIZE=2 NODE_RANK=1 GROUP_RANK=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=29500");
    expect(out).toContain("[rank 3] WORLD_SIZE=4 RANK=3 LOCAL_RANK=1");
    expect(out).toContain("[rank 3] token=13 ");
  });

  it("a rank exiting non-zero ends the job quickly with its code and name", async () => {
    const { result, err, ms } = await run({ nprocPerNode: 3, script: path.join(FIX, "fail.mjs"), args: ["3"] });
    expect(ms).toBeLessThan(8_000);
    expect(result).toEqual({ exitCode: 3, failedRank: 1, message: "rank 1 exited with code 3; the other ranks were stopped" });
    expect(err).toContain("[fulgur run] rank 1 exited with code 3");
  });

  it("a rank that throws ends the job with exit code 1 and its stack on stderr", async () => {
    const { result, err, ms } = await run({ nprocPerNode: 2, script: path.join(FIX, "fail.mjs"), args: ["throw"] });
    expect(ms).toBeLessThan(8_000);
    expect(result).toMatchObject({ exitCode: 1, failedRank: 1 });
    expect(err).toContain("[rank 1] Error: thrown on purpose");
  });

  it("a rank killed by SIGKILL ends the job; a rank ignoring SIGTERM is killed after the grace period", async () => {
    const { result, out, ms } = await run({ nprocPerNode: 2, script: path.join(FIX, "sigkill.mjs"), killGraceMs: 500 });
    expect(ms).toBeLessThan(10_000);
    expect(result).toEqual({
      exitCode: 137,
      failedRank: 1,
      signal: "SIGKILL",
      message: "rank 1 was killed by signal SIGKILL; the other ranks were stopped",
    });
    expect(out).toContain("[rank 0] ignoring SIGTERM");
  });

  it("forwards SIGINT to the ranks and exits 130", async () => {
    const child = spawn(process.execPath, nodeArguments(path.join(FIX, "launchSelf.ts"), []), { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let readyCount = 0;
    child.stdout.on("data", (d: Buffer) => {
      out += d;
      readyCount = (out.match(/ready/g) ?? []).length;
      if (readyCount === 2 && !child.killed) child.kill("SIGINT");
    });
    const code = await new Promise<number | null>((resolve) => child.on("exit", (c) => resolve(c)));
    expect(out).toContain("[rank 0] got SIGINT");
    expect(out).toContain("[rank 1] got SIGINT");
    expect(code).toBe(130);
    expect(out).toMatch(/RESULT \{"exitCode":130,"signal":"SIGINT"/);
  });
});

describe("launch option errors come before anything is spawned", () => {
  const marker = () => path.join(tmp, `marker-${Math.random().toString(36).slice(2)}`);
  async function refused(options: Partial<LaunchOptions>, message: RegExp): Promise<void> {
    const file = marker();
    const err = await launch({ nprocPerNode: 1, script: path.join(FIX, "marker.mjs"), args: [file], ...options } as LaunchOptions).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(DistributedArgumentError);
    expect((err as Error).message).toMatch(message);
    expect(existsSync(file)).toBe(false);
  }

  it("nproc-per-node must be a positive integer", async () => {
    await refused({ nprocPerNode: 0 }, /launch option nprocPerNode \(--nproc-per-node\): got 0; expected a positive integer/);
    await refused({ nprocPerNode: 1.5 }, /nprocPerNode \(--nproc-per-node\): got 1.5/);
    await refused({ nprocPerNode: "two" as never }, /nprocPerNode \(--nproc-per-node\): got "two"/);
  });

  it("ports must be 1..65535 and free on node 0", async () => {
    await refused({ masterPort: 70000 }, /masterPort \(--master-port\): got 70000; expected an integer from 1 to 65535/);
    await refused({ masterPort: 0 }, /masterPort \(--master-port\): got 0/);
    const blocker = net.createServer();
    await new Promise<void>((r) => blocker.listen({ host: "127.0.0.1", port: 0 }, () => r()));
    const port = (blocker.address() as net.AddressInfo).port;
    try {
      await refused({ masterPort: port }, new RegExp(`masterPort \\(--master-port\\): got ${port}; expected a free port: ${port} on 127.0.0.1 is already in use`));
    } finally {
      await new Promise<void>((r) => blocker.close(() => r()));
    }
  });

  it("node-rank must be below nnodes, and several nodes need a shared token", async () => {
    await refused({ nnodes: 2, nodeRank: 2 }, /nodeRank \(--node-rank\): got 2; expected an integer from 0 to 1 \(node-rank must be less than nnodes=2\)/);
    await refused({ nnodes: 2, nodeRank: 1, env: {} }, /nnodes=2 needs the same FULGUR_STORE_TOKEN on every node/);
  });

  it("the script must exist and be a script node can run", async () => {
    await refused({ script: path.join(tmp, "missing.mjs") }, /launch option script: got ".*missing\.mjs"; expected an existing script file/);
    await refused({ script: "train.py" }, /script: got "train.py"; expected a path to a script ending in \.ts/);
  });

  it("unknown options are named", () => {
    expect(() => resolveLaunchOptions({ nprocPerNode: 1, script: "a.js", nproc: 2 } as never)).toThrow(/unknown option\(s\) "nproc"/);
    expect(resolveLaunchOptions({ nprocPerNode: "4" as never, script: "a.ts" }).nprocPerNode).toBe(4);
  });
});
