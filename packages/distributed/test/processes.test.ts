/**
 * Real jobs: 2, 3 and 4 processes started by the launcher, joining through initProcessGroup
 * (torchrun variables, store on rank 0, token), running collectives on tensors, and failing the
 * way decision 12 says: mismatches fail fast, a vanished peer is reported, a failure reaches
 * every rank through the store.
 */
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { launchJob } from "./helpers";

const WORKER = path.join(path.dirname(fileURLToPath(import.meta.url)), "fixtures", "worker.ts");

const run = (nproc: number, mode: string) => launchJob(nproc, WORKER, [mode]);

describe("multi-process jobs", () => {
  for (const n of [2, 3, 4]) {
    it(`${n} processes: every collective on every dtype matches direct computation`, async () => {
      const { result, out, err } = await run(n, "collectives");
      expect(err).toBe("");
      expect(result.exitCode).toBe(0);
      for (let r = 0; r < n; r++) expect(out).toContain(`[rank ${r}] rank ${r} of ${n}: 54 checks passed`);
    });
  }

  it("a mismatched collective fails fast on both ranks with a clear error", async () => {
    const started = Date.now();
    const { result, out, err } = await run(2, "mismatch");
    expect(Date.now() - started, `${out}${err}`).toBeLessThan(15_000);
    expect(result.exitCode).toBe(0);
    // One rank notices; the other hears it from that rank; both lines name both calls.
    const lines = out.trim().split("\n");
    expect(lines.length).toBe(2);
    expect(lines.some((l) => /caught CollectiveMismatchError: collective mismatch in (allReduce|broadcast) #1/.test(l))).toBe(true);
    for (const l of lines) {
      expect(l).toMatch(/^\[rank \d\] caught (GroupAbortedError|CollectiveMismatchError)/);
      expect(l).toContain("allReduce(sum) #1 of 3 float32 elements");
      expect(l).toContain("broadcast(0) #1 of 3 float32 elements");
    }
  });

  it("a rank that exits mid-job is reported by the rank waiting for it", async () => {
    const { out } = await run(2, "peer-exits");
    expect(out).toMatch(/\[rank 0\] caught PeerLostError: the connection from global rank 1 closed unexpectedly/);
  });

  it("a failure reported by one rank reaches every rank, and the job exits naming it", async () => {
    const { result, out, err } = await run(3, "failure");
    for (const r of [0, 1, 2]) expect(out).toContain(`[rank ${r}] saw failure of rank 2: boom on purpose`);
    expect(result).toMatchObject({ exitCode: 1, failedRank: 2 });
    expect(err).toContain("[fulgur run] rank 2 exited with code 1");
  });
});
