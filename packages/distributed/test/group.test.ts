/**
 * The host process group's behaviour around the algorithms: sub-groups, send/recv, mismatches
 * failing fast on every rank, timeouts, lost peers, the collective log, argument errors.
 */
import { afterEach, describe, expect, it } from "vitest";
import {
  CollectiveMismatchError,
  CollectiveTimeoutError,
  DistributedArgumentError,
  GroupAbortedError,
  GroupFailedError,
  PeerLostError,
} from "../src/errors";
import { createHostProcessGroup } from "../src/processGroup/hostGroup";
import { connect, makeWorld, startStore, TOKEN, type World } from "./helpers";

let world: World | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

const f32 = (...v: number[]) => Float32Array.from(v);

describe("sub-groups", () => {
  it("reduce among their members only, in the order given", async () => {
    world = await makeWorld(4);
    const subs = await Promise.all(world.groups.map((g) => g.newGroup([3, 1])));
    expect(subs.map((s) => s.rank)).toEqual([-1, 1, -1, 0]);
    expect(subs[1].ranks).toEqual([3, 1]);
    const [a, b] = await Promise.all([subs[1].allReduce(f32(10), "float32"), subs[3].allReduce(f32(5), "float32")]);
    expect(Array.from(a)).toEqual([15]);
    expect(Array.from(b)).toEqual([15]);
    const gathered = await Promise.all([subs[1].allGather(f32(1), "float32"), subs[3].allGather(f32(3), "float32")]);
    expect(Array.from(gathered[0])).toEqual([3, 1]); // group rank 0 is global rank 3
    expect(() => subs[0].allReduce(f32(1), "float32")).toThrow(/global rank 0 is not a member of group ".*\[3,1\]"/);
  });

  it("two groups of the same members are separate, and groups nest", async () => {
    world = await makeWorld(3);
    const first = await Promise.all(world.groups.map((g) => g.newGroup([0, 1, 2])));
    const second = await Promise.all(world.groups.map((g) => g.newGroup([0, 1, 2])));
    expect(first[0].name).not.toBe(second[0].name);
    // Interleave: the two groups' messages must not be confused.
    const results = await Promise.all(
      world.groups.map((_, r) => Promise.all([first[r].allReduce(f32(r), "float32"), second[r].allReduce(f32(10 * r), "float32", "max")])),
    );
    for (const [x, y] of results) {
      expect(Array.from(x)).toEqual([3]);
      expect(Array.from(y)).toEqual([20]);
    }
    const nested = await Promise.all(first.map((g) => g.newGroup([2, 0])));
    const out = await Promise.all([nested[0].broadcast(f32(0, 0), "float32", 0), nested[2].broadcast(f32(7, 8), "float32", 0)]);
    expect(Array.from(out[0])).toEqual([7, 8]); // group rank 0 of [2, 0] is global rank 2
  });

  it("rejects bad member lists", async () => {
    world = await makeWorld(2);
    await expect(world.groups[0].newGroup([])).rejects.toThrow(/newGroup ranks: got \[\]/);
    await expect(world.groups[0].newGroup([0, 2])).rejects.toThrow(/expected a group rank from 0 to 1/);
    await expect(world.groups[0].newGroup([1, 1])).rejects.toThrow(/each rank may appear once/);
  });
});

describe("send and recv", () => {
  it("deliver in order per tag, for every dtype", async () => {
    world = await makeWorld(3);
    const [g0, , g2] = world.groups;
    const sends = Promise.all([
      g0.send(f32(1, 2, 3), "float32", 2, 0),
      g0.send(f32(4, 5, 6), "float32", 2, 0),
      g0.send(Uint16Array.of(0x3f80), "bfloat16", 2, 7),
      g0.send(Int32Array.of(-9), "int32", 2, 1),
    ]);
    // Receive tag 1 and 7 before tag 0: tags are independent queues.
    expect(Array.from(await g2.recv("int32", 1, 0, 1))).toEqual([-9]);
    expect(Array.from(await g2.recv("bfloat16", 1, 0, 7))).toEqual([0x3f80]);
    expect(Array.from(await g2.recv("float32", 3, 0, 0))).toEqual([1, 2, 3]);
    expect(Array.from(await g2.recv("float32", 3, 0, 0))).toEqual([4, 5, 6]);
    await sends;
  });

  it("a recv of the wrong size or dtype fails naming both", async () => {
    world = await makeWorld(2);
    await world.groups[0].send(f32(1, 2), "float32", 1);
    const err = await world.groups[1].recv("float32", 3, 0).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CollectiveMismatchError);
    expect((err as Error).message).toMatch(/recv of 3 float32 elements.*send of 2 float32 elements/);
  });

  it("a recv nobody answers times out, and the group stays usable", async () => {
    world = await makeWorld(2, { timeoutMs: 200 });
    const err = await world.groups[1].recv("float32", 1, 0, 5).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CollectiveTimeoutError);
    expect((err as Error).message).toMatch(/recv #1 on group "w\d+" \(group rank 1, global rank 1\) timed out after 200 ms waiting for data from group rank 0 \(tag 5\)/);
    const sums = await Promise.all(world.groups.map((g) => g.allReduce(f32(1), "float32")));
    expect(sums.map((s) => s[0])).toEqual([2, 2]);
    // The timed-out recv no longer holds a place in the queue: the next message goes to the next recv.
    await world.groups[0].send(f32(42), "float32", 1, 5);
    expect(Array.from(await world.groups[1].recv("float32", 1, 0, 5))).toEqual([42]);
  });
});

describe("mismatched collectives fail fast on every rank", () => {
  it("allReduce on one rank, broadcast on the other", async () => {
    world = await makeWorld(2, { timeoutMs: 30_000 });
    const started = Date.now();
    const [e0, e1] = await Promise.all([
      world.groups[0].allReduce(f32(1, 2, 3), "float32").catch((e: unknown) => e),
      world.groups[1].broadcast(f32(0, 0, 0), "float32", 0).catch((e: unknown) => e),
    ]);
    expect(Date.now() - started).toBeLessThan(3_000);
    const errors = [e0, e1] as Error[];
    const mismatch = errors.find((e) => e instanceof CollectiveMismatchError)!;
    expect(mismatch.message).toMatch(/collective mismatch in (allReduce|broadcast) #1/);
    expect(mismatch.message).toMatch(/allReduce\(sum\) #1 of 3 float32 elements/);
    expect(mismatch.message).toMatch(/broadcast\(0\) #1 of 3 float32 elements/);
    // The other rank hears about it from the one that noticed.
    const other = errors.find((e) => e !== mismatch)!;
    expect(other).toBeInstanceOf(GroupAbortedError);
    expect(other.message).toContain("collective mismatch");
    // And the group refuses further work, saying why.
    await expect(world.groups[0].barrier()).rejects.toThrow(GroupFailedError);
    await expect(world.groups[1].barrier()).rejects.toThrow(/barrier #2 .* was not run: .*mismatch/);
  });

  it("different sizes are a mismatch naming both sizes", async () => {
    world = await makeWorld(3, { timeoutMs: 30_000 });
    const errs = await Promise.all(
      world.groups.map((g, r) => g.allReduce(new Float32Array(r === 2 ? 8 : 7), "float32").catch((e: unknown) => e)),
    );
    for (const e of errs) expect(e).toBeInstanceOf(Error);
    const text = errs.map((e) => (e as Error).message).join("\n");
    expect(text).toMatch(/of 7 float32 elements/);
    expect(text).toMatch(/of 8 float32 elements/);
  });

  it("a collective only one rank calls times out naming op, group, rank, seq and what it waits for", async () => {
    world = await makeWorld(2, { timeoutMs: 250 });
    await Promise.all(world.groups.map((g) => g.barrier()));
    const started = Date.now();
    const err = await world.groups[0].allReduce(f32(1), "float32").catch((e: unknown) => e);
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(err).toBeInstanceOf(CollectiveTimeoutError);
    const t = err as CollectiveTimeoutError;
    expect(t.context).toMatchObject({ op: "allReduce", rank: 0, globalRank: 0, seq: 2 });
    expect(t.message).toMatch(/allReduce #2 on group "w\d+" \(group rank 0, global rank 0\) timed out after 250 ms waiting for data from group rank 1/);
  });

  it("a peer that leaves fails the waiting rank at once", async () => {
    world = await makeWorld(2, { timeoutMs: 30_000 });
    await Promise.all(world.groups.map((g) => g.barrier()));
    const pending = world.groups[0].allReduce(f32(1), "float32");
    await world.groups[1].destroy();
    const err = await pending.catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PeerLostError);
    expect((err as Error).message).toMatch(/global rank 1 destroyed its process group/);
  });
});

describe("a lost member", () => {
  it("is noticed through the connection this rank sends on when the peer never sent to it", async () => {
    world = await makeWorld(2, { timeoutMs: 30_000 });
    const [g0, g1] = world.groups;
    // Rank 0 has sent to rank 1; rank 1 never to rank 0: no connection from rank 1 exists.
    await Promise.all([g0.send(f32(1), "float32", 1), g1.recv("float32", 1, 0)]);
    const pending = g0.recv("float32", 1, 1);
    const started = Date.now();
    await g1.destroy();
    const err = await pending.catch((e: unknown) => e);
    expect(Date.now() - started).toBeLessThan(3_000);
    expect(err).toBeInstanceOf(PeerLostError);
    expect(err).toMatchObject({ peerGlobalRank: 1 });
    expect((err as Error).message).toMatch(/the connection to global rank 1 closed and nothing listens at its address any more/);
  });

  it("is named by every member, also one waiting for another, live member", async () => {
    world = await makeWorld(3, { timeoutMs: 30_000, smallTensorBytes: 0 });
    await Promise.all(world.groups.map((g) => g.allReduce(f32(1), "float32")));
    // Ring: rank 0 waits for rank 2, which waits for rank 1, which leaves instead of joining.
    const pending = [0, 2].map((r) => world!.groups[r].allReduce(f32(1, 2, 3), "float32").catch((e: unknown) => e));
    await world.groups[1].destroy();
    const errs = await Promise.all(pending);
    for (const err of errs) {
      expect(err).toBeInstanceOf(PeerLostError);
      expect(err).toMatchObject({ peerGlobalRank: 1 });
    }
  });
});

describe("destroy", () => {
  it("returns promptly and fails pending work even when a peer never joined", async () => {
    const server = await startStore();
    const store = await connect(server);
    try {
      const lonely = await createHostProcessGroup({ store, rank: 0, size: 2, name: "lonely", token: TOKEN });
      const pending = lonely.allReduce(f32(1), "float32");
      await new Promise((r) => setTimeout(r, 50));
      const started = Date.now();
      await lonely.destroy();
      expect(Date.now() - started).toBeLessThan(3_000);
      await expect(pending).rejects.toThrow(/group "lonely" was destroyed/);
      await expect(lonely.barrier()).rejects.toThrow(GroupFailedError);
    } finally {
      await store.close();
      await server.close();
    }
  });
});

describe("transport token", () => {
  it("a peer presenting another token is never heard", async () => {
    const server = await startStore();
    const stores = await Promise.all([connect(server), connect(server)]);
    const groups = await Promise.all([
      createHostProcessGroup({ store: stores[0], rank: 0, size: 2, name: "tok", token: TOKEN, timeoutMs: 300 }),
      createHostProcessGroup({ store: stores[1], rank: 1, size: 2, name: "tok", token: "intruder", timeoutMs: 300 }),
    ]);
    try {
      const [e0, e1] = await Promise.all(groups.map((g) => g.allReduce(f32(1), "float32").catch((e: unknown) => e)));
      expect(e0).toBeInstanceOf(CollectiveTimeoutError);
      expect((e0 as Error).message).toContain("waiting for data from group rank 1");
      expect(e1).toBeInstanceOf(Error);
    } finally {
      await Promise.all(groups.map((g) => g.destroy()));
      await Promise.all(stores.map((s) => s.close()));
      await server.close();
    }
  });
});

describe("recentCollectives", () => {
  it("records op, shape, dtype, seq, state and the caller's line", async () => {
    world = await makeWorld(2);
    await Promise.all(world.groups.map((g) => g.allReduce(new Float32Array(6), "float32", "max", [2, 3])));
    await Promise.all(world.groups.map((g) => g.barrier()));
    const log = world.groups[0].recentCollectives();
    expect(log.map((r) => [r.op, r.seq, r.dtype, r.shape, r.state])).toEqual([
      ["allReduce(max)", 1, "float32", [2, 3], "completed"],
      ["barrier", 2, "none", [], "completed"],
    ]);
    expect(log[0].callSite).toMatch(/group\.test\.ts:\d+/);
  });

  it("keeps only the last 64", async () => {
    world = await makeWorld(2);
    for (let i = 0; i < 70; i++) await Promise.all(world.groups.map((g) => g.barrier()));
    const log = world.groups[1].recentCollectives();
    expect(log.length).toBe(64);
    expect(log[0].seq).toBe(7);
    expect(log[63].seq).toBe(70);
  });
});

describe("argument errors name the argument and what is allowed", () => {
  it("before anything is queued", async () => {
    world = await makeWorld(2);
    const g = world.groups[0];
    expect(() => g.allReduce(f32(1), "float32", "prod" as never)).toThrow(/allReduce op: got "prod"; expected one of sum, avg, max, min/);
    expect(() => g.broadcast(f32(1), "float32", 2)).toThrow(/broadcast src: got 2; expected a group rank from 0 to 1/);
    expect(() => g.reduceScatter(f32(1, 2, 3), "float32")).toThrow(/3 elements cannot be split into 2 equal chunks/);
    expect(() => g.allReduce(f32(1), "bfloat16")).toThrow(/a bfloat16 host array must be a Uint16Array; got Float32Array/);
    expect(() => g.allReduce(f32(1), "float8" as never)).toThrow(/dtype: got "float8"/);
    expect(() => g.send(f32(1), "float32", 0)).toThrow(/send dst: got 0, this rank itself/);
    expect(() => g.send(f32(1), "float32", 1, -1)).toThrow(/tag: got -1/);
    expect(() => g.recv("float32", 1.5, 1)).toThrow(DistributedArgumentError);
    // Nothing was issued, so the next collective is #1 on both ranks and matches.
    const outs = await Promise.all(world.groups.map((x) => x.allReduce(f32(2), "float32")));
    expect(outs.map((o) => o[0])).toEqual([4, 4]);
  });
});
