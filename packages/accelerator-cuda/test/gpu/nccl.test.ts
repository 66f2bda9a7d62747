/**
 * NcclProcessGroup across two processes on two GPUs (one process per device, DESIGN.md decision 1):
 * each collective's result is checked against what the ranks' inputs make it. Needs 2 GPUs.
 */
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { gpuCount } from "./harness";

const WORLD = 2;

function runRank(rank: number, storeDir: string): Promise<Record<string, number[]>> {
  return new Promise((resolvePromise, reject) => {
    const child = spawn(process.execPath, ["--import", "tsx", resolve(__dirname, "ncclWorker.ts")], {
      env: { ...process.env, RANK: String(rank), LOCAL_RANK: String(rank), WORLD_SIZE: String(WORLD), STORE_DIR: storeDir },
      cwd: resolve(__dirname, "..", ".."),
    });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    child.on("close", (code) => {
      if (code !== 0) reject(new Error(`rank ${rank} exited with ${code}:\n${err}`));
      else resolvePromise(JSON.parse(out.trim().split("\n").pop()!));
    });
  });
}

describe.skipIf(gpuCount < WORLD)("NCCL process group on 2 GPUs", () => {
  it("all-reduce, average, all-gather, reduce-scatter, broadcast, send/recv and barrier", async () => {
    const dir = mkdtempSync(join(tmpdir(), "fulgur-nccl-"));
    try {
      const [r0, r1] = await Promise.all([runRank(0, dir), runRank(1, dir)]);
      for (const r of [r0, r1]) {
        expect(r.allReduce).toEqual([10, 12, 14, 16, 18, 20, 22, 24]);
        expect(r.avg).toEqual([1.5, 1.5, 1.5, 1.5]);
        expect(r.allGather).toEqual([0, 1, 2, 100, 101, 102]);
        expect(r.broadcast).toEqual([0, 7, 14, 21, 28]);
      }
      // reduceScatter: input i + rank summed over ranks = 2i + 1; rank r keeps chunk r.
      expect(r0.reduceScatter).toEqual([1, 3]);
      expect(r1.reduceScatter).toEqual([5, 7]);
      expect(r0.ring).toEqual([1000, 1001, 1002, 1003, 1004, 1005]);
      expect(r1.ring).toEqual([0, 1, 2, 3, 4, 5]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000);
});

if (gpuCount < WORLD) describe("NCCL process group on 2 GPUs", () => it.skip(`skipped: ${gpuCount} GPU(s) found, 2 needed`, () => {}));
