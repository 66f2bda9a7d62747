/**
 * `Work.synchronize()` on the CPU process group (DESIGN.md decision 14), in real jobs of 2 and 3
 * processes started by the launcher (test/fixtures/syncRank.ts): results are in place when it
 * returns, a synchronous hook loop sees every step's gather, and failures end a blocked
 * synchronize() promptly — a killed peer, a failure reported in the store, a mismatch — while a
 * rank 0 blocked before its peers have joined still serves them the store.
 */
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { launchJob } from "./helpers";

const RANK = path.join(path.dirname(fileURLToPath(import.meta.url)), "fixtures", "syncRank.ts");
const run = (nproc: number, mode: string, killGraceMs?: number) => launchJob(nproc, RANK, [mode], killGraceMs);

/** The lines rank `r` printed, without the launcher's prefix. */
const linesOf = (out: string, r: number) =>
  out
    .split("\n")
    .filter((l) => l.startsWith(`[rank ${r}] `))
    .map((l) => l.slice(`[rank ${r}] `.length));

describe("synchronize() in multi-process jobs", () => {
  it("3 processes: every collective's result is in place when synchronize() returns", async () => {
    const { result, out, err } = await run(3, "collectives");
    expect(err).toBe("");
    expect(result.exitCode).toBe(0);
    for (let r = 0; r < 3; r++) expect(out).toContain(`[rank ${r}] rank ${r} of 3: 27 checks passed`);
  });

  it("3 processes: a synchronous hook loop of 20 gathers computes the same as one process, on every rank", async () => {
    const { result, out, err } = await run(3, "hook-loop");
    expect(err).toBe("");
    expect(result.exitCode).toBe(0);
    const losses = [0, 1, 2].map((r) => linesOf(out, r).find((l) => l.startsWith("losses "))!);
    expect(losses[0]).toBeDefined();
    expect(JSON.parse(losses[0].slice(7))).toHaveLength(20);
    expect(losses[1]).toBe(losses[0]);
    expect(losses[2]).toBe(losses[0]);
  });

  it("a peer killed while the others are blocked in synchronize(): they throw PeerLostError naming it within seconds", async () => {
    // The group's timeout is 10 minutes: only noticing the lost connection can end this quickly.
    const { result, out, ms } = await run(3, "peer-killed", 10_000);
    expect(result).toMatchObject({ exitCode: 137, failedRank: 1, signal: "SIGKILL" });
    for (const r of [0, 2]) {
      const line = linesOf(out, r).find((l) => l.startsWith("caught "));
      expect(line, out).toMatch(/^caught PeerLostError \(peerGlobalRank 1\) after (\d+) ms: .*global rank 1 closed unexpectedly/);
      expect(Number(/after (\d+) ms/.exec(line!)![1])).toBeLessThan(5_000);
    }
    expect(ms).toBeLessThan(20_000);
  });

  it("a failure reported in the store ends a blocked synchronize() on every other rank", async () => {
    const { result, out } = await run(3, "reported-failure");
    expect(result).toMatchObject({ exitCode: 1, failedRank: 2 });
    for (const r of [0, 1]) {
      const line = linesOf(out, r).find((l) => l.startsWith("caught "));
      expect(line, out).toMatch(/^caught RankFailureError after (\d+) ms: rank 2 failed: boom on purpose$/);
      expect(Number(/after (\d+) ms/.exec(line!)![1])).toBeLessThan(5_000);
    }
  });

  it("mismatched collectives under synchronize() fail fast with CollectiveMismatchError", async () => {
    const { result, out, ms } = await run(2, "mismatch");
    expect(ms, out).toBeLessThan(15_000);
    expect(result.exitCode).toBe(0);
    const lines = [0, 1].map((r) => linesOf(out, r).find((l) => l.startsWith("caught "))!);
    expect(lines.some((l) => /^caught CollectiveMismatchError after \d+ ms: collective mismatch in (allReduce|broadcast) #1/.test(l))).toBe(true);
    for (const l of lines) {
      expect(l).toMatch(/^caught (GroupAbortedError|CollectiveMismatchError) after (\d+) ms/);
      expect(Number(/after (\d+) ms/.exec(l)![1])).toBeLessThan(5_000);
      expect(l).toContain("allReduce(sum) #1 of 3 float32 elements");
      expect(l).toContain("broadcast(0) #1 of 3 float32 elements");
    }
  });

  it("rank 0 blocked in synchronize() while its peers are still joining serves them the store and completes", async () => {
    const { result, out, err } = await run(3, "late-peers");
    expect(err).toBe("");
    expect(result.exitCode).toBe(0);
    for (let r = 0; r < 3; r++) expect(linesOf(out, r)).toContain(`rank ${r}: [6,30]`);
  });
});
