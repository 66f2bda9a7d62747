import { afterEach, describe, expect, it } from "vitest";
import { FailureChannel, reportFailure, watchForFailures, type FailureReport } from "../src/failure";
import { RankFailureError } from "../src/errors";
import type { TcpStore } from "../src/store/client";
import type { StoreServer } from "../src/store/server";
import { connect, startStore } from "./helpers";

let server: StoreServer;
let stores: TcpStore[] = [];
afterEach(async () => {
  for (const s of stores) await s.close();
  stores = [];
  await server?.close();
});

async function ranks(n: number): Promise<TcpStore[]> {
  server = await startStore();
  stores = await Promise.all(Array.from({ length: n }, () => connect(server)));
  return stores;
}

describe("failure propagation", () => {
  it("a report reaches every watching rank, naming the failing rank", async () => {
    const s = await ranks(3);
    const seen: { rank: number; report: FailureReport; error: RankFailureError }[] = [];
    const watches = s.map((store, rank) => watchForFailures(store, (report, error) => seen.push({ rank, report, error }), { pollTimeoutMs: 100 }));
    await new Promise((r) => setTimeout(r, 250)); // at least one renewed wait
    await reportFailure(s[2], 2, new TypeError("bad batch at step 17"));
    await Promise.all(watches.map((w) => w.done));
    expect(seen.map((x) => x.rank).sort()).toEqual([0, 1, 2]);
    for (const { report, error } of seen) {
      expect(report).toMatchObject({ rank: 2, message: "bad batch at step 17", name: "TypeError" });
      expect(report.stack).toContain("failure.test.ts");
      expect(error).toBeInstanceOf(RankFailureError);
      expect(error.message).toBe("rank 2 failed: bad batch at step 17");
      expect(error.failingRank).toBe(2);
    }
  });

  it("the first report wins; later ones get it back", async () => {
    const s = await ranks(2);
    const first = await reportFailure(s[1], 1, new Error("original"));
    const second = await reportFailure(s[0], 0, "secondary: peer vanished");
    expect(first.rank).toBe(1);
    expect(second).toMatchObject({ rank: 1, message: "original" });
  });

  it("stop() ends watching without a report; losing the store is reported separately", async () => {
    const s = await ranks(2);
    let called = false;
    const w = watchForFailures(s[0], () => (called = true), { pollTimeoutMs: 50 });
    w.stop();
    await w.done;
    await reportFailure(s[1], 1, new Error("late"));
    await new Promise((r) => setTimeout(r, 50));
    expect(called).toBe(false);

    const lost: Error[] = [];
    const w2 = watchForFailures(s[0], () => (called = true), { key: "other/failure", onStoreLost: (e) => lost.push(e) });
    await server.close();
    await w2.done;
    expect(called).toBe(false);
    expect(lost[0].message).toMatch(/get\("other\/failure"\): .*the store at 127\.0\.0\.1:\d+/);
  });

  it("FailureChannel reports and watches under its own key", async () => {
    const s = await ranks(2);
    const a = new FailureChannel(s[0], 0, { key: "job-7/failure" });
    const b = new FailureChannel(s[1], 1, { key: "job-7/failure" });
    const got = new Promise<FailureReport>((resolve) => b.watchFailures((r) => resolve(r)));
    await a.report(new Error("oom"));
    expect(await got).toMatchObject({ rank: 0, message: "oom" });
    await expect(s[0].get("fulgur/failure", 50)).rejects.toThrow(/timed out/);
    a.stop();
    b.stop();
  });
});
