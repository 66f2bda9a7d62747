import { afterEach, describe, expect, it } from "vitest";
import { tensor } from "@fulgur/tensor";
import { initProcessGroup, type Initialized } from "../src/init";
import { findFreePort } from "../src/cluster/freePort";
import { StoreTokenMismatchError } from "../src/errors";

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
