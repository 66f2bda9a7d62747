/**
 * The tensor adapter: collectives on Tensors write their results back in place (views included),
 * return Work handles, and check tensor shapes against the group size.
 */
import { afterEach, describe, expect, it } from "vitest";
import { tensor, zeros, type Tensor } from "@fulgur/tensor";
import type { CpuProcessGroup } from "../src/processGroup/cpuProcessGroup";
import { makeCpuWorld, type CpuWorld } from "./helpers";

let world: CpuWorld | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

async function cpuWorld(size: number, options: { timeoutMs?: number } = {}): Promise<CpuProcessGroup[]> {
  world = await makeCpuWorld(size, options);
  return world.groups;
}

const waitAll = (works: { wait(): Promise<void> }[]) => Promise.all(works.map((w) => w.wait()));

describe("CpuProcessGroup", () => {
  it("allReduce writes in place, through views, for float32 and bfloat16", async () => {
    const groups = await cpuWorld(2);
    const ts = groups.map((_, r) => tensor([[1 + r, 2], [3, 4 + r]]));
    const works = groups.map((g, r) => g.allReduce(ts[r], "sum"));
    await waitAll(works);
    expect(works.every((w) => w.isCompleted())).toBe(true);
    for (const t of ts) expect(t.toNested()).toEqual([[3, 4], [6, 9]]);

    // A transposed (non-contiguous) view: the result lands in the base tensor's storage.
    const bases = groups.map((_, r) => tensor([[1, 2, 3], [4, 5, 6]], { dtype: "bfloat16" }).mul(r + 1));
    await waitAll(groups.map((g, r) => g.allReduce(bases[r].t(), "max")));
    for (const b of bases) expect(b.toNested()).toEqual([[2, 4, 6], [8, 10, 12]]);
  });

  it("broadcast, allGather, reduceScatter, send/recv and barrier on tensors", async () => {
    const groups = await cpuWorld(3);
    const b = groups.map((_, r) => (r === 1 ? tensor([7, 8, 9], { dtype: "int32" }) : zeros([3], { dtype: "int32" })));
    await waitAll(groups.map((g, r) => g.broadcast(b[r], 1)));
    for (const t of b) expect(t.toArray()).toEqual([7, 8, 9]);

    const outs = groups.map(() => zeros([6, 2], { dtype: "float64" }));
    await waitAll(groups.map((g, r) => g.allGather(outs[r], tensor([[r, r], [r, -r]], { dtype: "float64" }))));
    for (const o of outs) expect(o.toNested()).toEqual([[0, 0], [0, -0], [1, 1], [1, -1], [2, 2], [2, -2]]);

    const rs = groups.map(() => zeros([2]));
    await waitAll(groups.map((g, r) => g.reduceScatter(rs[r], tensor([1, 2, 3, 4, 5, 6]).mul(r + 1), "avg")));
    expect(rs.map((t) => t.toArray())).toEqual([[2, 4], [6, 8], [10, 12]]);

    const inbox = zeros([2, 2], { dtype: "float16" });
    const sent = groups[0].send(tensor([[0.5, 1], [1.5, 2]], { dtype: "float16" }), 2, 3);
    await groups[2].recv(inbox, 0, 3).wait();
    await sent.wait();
    expect(inbox.toNested()).toEqual([[0.5, 1], [1.5, 2]]);

    await waitAll(groups.map((g) => g.barrier()));
    const log = groups[0].recentCollectives();
    expect(log.map((r) => r.op)).toEqual(["broadcast(1)", "allGather", "reduceScatter(avg)", "send(to 2, tag 3)", "barrier"]);
    expect(log[1].shape).toEqual([2, 2]);
    expect(log[0].callSite).toMatch(/cpuProcessGroup\.test\.ts:\d+/);
  });

  it("sub-groups of tensors", async () => {
    const groups = await cpuWorld(3);
    const subs = await Promise.all(groups.map((g) => g.newGroup([0, 2])));
    expect(subs[0].ranks).toEqual([0, 2]);
    expect(subs[1].rank).toBe(-1);
    const ts: Tensor[] = [tensor([1]), tensor([100]), tensor([10])];
    await waitAll([subs[0].allReduce(ts[0]), subs[2].allReduce(ts[2])]);
    expect(ts.map((t) => t.item())).toEqual([11, 100, 11]);
  });

  it("checks tensor sizes against the group size, naming shapes", async () => {
    const groups = await cpuWorld(2);
    expect(() => groups[0].allGather(zeros([3]), zeros([2]))).toThrow(/allGather output: shape \[3\] has 3 elements; expected 2 × 2/);
    expect(() => groups[0].reduceScatter(zeros([2]), zeros([3]))).toThrow(/reduceScatter input: shape \[3\] has 3 elements; expected 2 × 2/);
    expect(() => groups[0].allGather(zeros([4]), zeros([2], { dtype: "float64" }))).toThrow(/output dtype float32 differs from input dtype float64/);
  });

  it("a failed collective rejects wait() and never becomes an unhandled rejection", async () => {
    const [g] = await cpuWorld(2, { timeoutMs: 100 });
    const work = g.allReduce(tensor([1]));
    await expect(work.wait()).rejects.toThrow(/allReduce #1 .* timed out after 100 ms/);
    expect(work.isCompleted()).toBe(true);
    const ignored = g.barrier(); // fails too (group failed); nobody waits on it
    await new Promise((r) => setTimeout(r, 20));
    expect(ignored.isCompleted()).toBe(true);
  });
});
