import { spawnSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, describe, expect, it } from "vitest";
import { tensor, zeros } from "@fulgur/tensor";
import { initProcessGroup, type Initialized } from "../src/init";
import { findFreePort } from "../src/cluster/freePort";
import { GroupFailedError, StoreTokenMismatchError } from "../src/errors";
import { nodeArguments } from "../src/launcher/launcher";

let jobs: Initialized[] = [];
afterEach(async () => {
  await Promise.all(jobs.map((j) => j.shutdown()));
  jobs = [];
});

const torchrun = (port: number, rank: number, size: number, token = "tok") => ({
  WORLD_SIZE: String(size),
  RANK: String(rank),
  LOCAL_RANK: String(rank),
  LOCAL_WORLD_SIZE: String(size),
  MASTER_ADDR: "127.0.0.1",
  MASTER_PORT: String(port),
  FULGUR_STORE_TOKEN: token,
});

describe("initProcessGroup", () => {
  it("a plain process is a world of one", async () => {
    const job = await initProcessGroup({ env: {} });
    jobs.push(job);
    expect(job.cluster.name).toBe("local");
    expect([job.group.rank, job.group.size]).toEqual([0, 1]);
    const t = tensor([1, 2]);
    await job.group.allReduce(t, "avg").wait();
    expect(t.toArray()).toEqual([1, 2]);
    expect(job.server).toBeDefined();
  });

  it("ranks of a torchrun-style job find each other; rank 0 hosts the store", async () => {
    const port = await findFreePort();
    // Rank 1 starts first and waits for rank 0's store to appear.
    const later = initProcessGroup({ env: torchrun(port, 1, 2), timeoutMs: 10_000 });
    await new Promise((r) => setTimeout(r, 100));
    const [j1, j0] = await Promise.all([later, initProcessGroup({ env: torchrun(port, 0, 2), timeoutMs: 10_000 })]);
    jobs.push(j0, j1);
    expect([j0.server !== undefined, j1.server !== undefined]).toEqual([true, false]);
    const ts = [tensor([1]), tensor([2])];
    await Promise.all([j0.group.allReduce(ts[0]).wait(), j1.group.allReduce(ts[1]).wait()]);
    expect(ts.map((t) => t.item())).toEqual([3, 3]);
  });

  it("a rank with another token is refused", async () => {
    const port = await findFreePort();
    const j0 = initProcessGroup({ env: torchrun(port, 0, 2, "right"), timeoutMs: 3_000 });
    const err = await initProcessGroup({ env: torchrun(port, 1, 2, "wrong"), timeoutMs: 3_000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreTokenMismatchError);
    // Rank 0 joined (it published its address and waits for peers lazily); close it without the barrier.
    const job0 = await j0;
    await job0.group.destroy();
    await job0.store.close();
    await job0.server?.close();
  });
});

describe("the transport thread, in one process", () => {
  async function pair(): Promise<[Initialized, Initialized]> {
    const port = await findFreePort();
    const [j0, j1] = await Promise.all([0, 1].map((r) => initProcessGroup({ env: torchrun(port, r, 2), timeoutMs: 10_000 })));
    jobs.push(j0, j1);
    return [j0, j1];
  }

  it("synchronize() blocks until the result is in place once every rank has issued, even on first contact", async () => {
    // Rank 0's store server runs in its transport thread, so rank 1's first address lookup is
    // answered while this thread blocks in rank 0's synchronize().
    const [j0, j1] = await pair();
    const ts = [tensor([1, 2]), tensor([10, 20])];
    const works = [j0.group.allReduce(ts[0]), j1.group.allReduce(ts[1])];
    works[0].synchronize();
    expect(ts[0].toArray()).toEqual([11, 22]);
    works[1].synchronize();
    expect(ts[1].toArray()).toEqual([11, 22]);
    await Promise.all(works.map((w) => w.wait()));
  });

  it("isCompleted() polled without the event loop turns true with the result written", async () => {
    const [j0, j1] = await pair();
    const outs = [zeros([4], { dtype: "bfloat16" }), zeros([4], { dtype: "bfloat16" })];
    const works = [j0, j1].map((j, r) => j.group.allGather(outs[r], tensor([r, r + 0.5], { dtype: "bfloat16" })));
    const tick = new Int32Array(new SharedArrayBuffer(4));
    const deadline = Date.now() + 10_000;
    while (!works.every((w) => w.isCompleted()) && Date.now() < deadline) Atomics.wait(tick, 0, 0, 1);
    for (const o of outs) expect(o.toArray()).toEqual([0, 0.5, 1, 1.5]);
  });

  it("after destroy: operations fail saying so, and the log is still readable", async () => {
    const [j0, j1] = await pair();
    await Promise.all([j0.group.barrier().wait(), j1.group.barrier().wait()]);
    await j1.group.destroy();
    await j0.group.destroy();
    expect(j0.group.recentCollectives().map((r) => [r.op, r.seq, r.state])).toEqual([["barrier", 1, "completed"]]);
    // Rank 1's thread is gone; rank 0's still serves the store, and its destroyed group refuses work.
    const late = [j0, j1].map((j) => j.group.allReduce(tensor([1])));
    for (const w of late) expect(() => w.synchronize()).toThrow(GroupFailedError);
    await expect(late[0].wait()).rejects.toThrow(/allReduce #2 on group "default" was not run: the group was destroyed/);
    await expect(late[1].wait()).rejects.toThrow(/worker thread was stopped \(the group was destroyed\)/);
    jobs = [];
    for (const j of [j1, j0]) {
      await j.store.close();
      await j.server?.close();
    }
  });

  it("a process that never destroys its group still exits: the thread is unref'ed", () => {
    const script = path.join(path.dirname(fileURLToPath(import.meta.url)), "fixtures", "leftOpen.ts");
    const started = Date.now();
    const r = spawnSync(process.execPath, nodeArguments(script, []), { encoding: "utf8", timeout: 20_000 });
    expect(r.stderr).toBe("");
    expect(r.stdout.trim()).toBe("done 2");
    expect(r.status).toBe(0);
    expect(Date.now() - started).toBeLessThan(15_000);
  });
});
