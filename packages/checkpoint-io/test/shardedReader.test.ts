/**
 * Reading by range: a checkpoint written at any world size N read back by ranks of any world size M,
 * each reading only its own segments (FSDP's unit layout at M), equals the originals; ranges that
 * straddle pieces are assembled from several files; and a read touches only the bytes of its range
 * and only the files that hold them.
 */
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { memoryStats } from "@fulgur/tensor";
import { BufferTracker, ShardedCheckpointIO, ShardedCheckpointWriter, loadShardedCheckpoint, openShardedCheckpoint, rankFileName } from "../src/sharded/index";
import { bitsOf, piece, sampleTensors, simulatedWorld, unitPieces, type HostTensor } from "./fixtures/sharded/simulatedRanks";
import { makeTempDir, removeDir } from "./helpers";

let dir: string;
beforeEach(async () => {
  dir = await makeTempDir();
});
afterEach(async () => {
  await removeDir(dir);
});

async function save(path: string, tensors: Record<string, HostTensor>, world: number): Promise<void> {
  const pieces = unitPieces(tensors, world);
  await Promise.all(simulatedWorld(world).map((c, r) => new ShardedCheckpointWriter(c).write(path, pieces[r], { world })));
}

describe("any world size reads any other's", () => {
  const pairs = [1, 2, 3, 4].flatMap((n) => [1, 2, 3, 4].map((m) => [n, m] as const));
  it.each(pairs)("written at %i, read by each rank of %i: its segments equal the originals", async (n, m) => {
    const tensors = sampleTensors();
    const path = join(dir, "ckpt");
    await save(path, tensors, n);
    const reader = await openShardedCheckpoint(path);
    expect(reader.worldSize).toBe(n);
    expect(reader.meta).toEqual({ world: n });
    for (const segments of unitPieces(tensors, m)) {
      for (const s of segments) {
        const got = await reader.read(s.name, s.start, s.end);
        expect(got.shape).toEqual([s.end - s.start]);
        expect(bitsOf(got.toHost()), `${s.name} [${s.start}, ${s.end})`).toEqual(bitsOf(tensors[s.name].data.slice(s.start, s.end)));
        got.dispose();
      }
    }
    await reader.close();
  });
});

describe("ranges", () => {
  const t: HostTensor = { dtype: "float64", shape: [4, 5], data: new Float64Array(20).map((_, i) => i * 1.5) };

  async function threeRanks(path: string): Promise<void> {
    // Pieces [0, 6), [6, 13), [13, 20), the middle one on rank 2 and the last on rank 1.
    const byRank = [[piece("w", t, 0, 6)], [piece("w", t, 13, 20)], [piece("w", t, 6, 13)]];
    await Promise.all(simulatedWorld(3).map((c, r) => new ShardedCheckpointWriter(c).write(path, byRank[r], {})));
  }

  it("a range straddling three pieces reads exactly its own bytes", async () => {
    const path = join(dir, "ckpt");
    await threeRanks(path);
    const tracker = new BufferTracker();
    const reader = await openShardedCheckpoint(path, { tracker });
    expect(reader.info("w")).toMatchObject({ shape: [4, 5], dtype: "F64", numel: 20, partial: false });
    expect(reader.info("w").pieces.map((p) => [p.file, p.start, p.end])).toEqual([
      [rankFileName(0, 3), 0, 6],
      [rankFileName(2, 3), 6, 13],
      [rankFileName(1, 3), 13, 20],
    ]);
    const got = await reader.read("w", 4, 15);
    expect(Array.from(got.toHost())).toEqual(Array.from(t.data.slice(4, 15)));
    expect(tracker.bytesRead).toBe(11 * 8);
    expect(tracker.largest).toBe(11 * 8);
    expect(tracker.held).toBe(0);

    const bytes = await reader.readBytes("w", 19);
    expect(Array.from(new Float64Array(bytes.buffer))).toEqual([28.5]);
    const whole = await reader.read("w");
    expect(whole.shape).toEqual([4, 5]);
    expect(Array.from(whole.toHost())).toEqual(Array.from(t.data));
    expect(Array.from((await reader.read("w", 7, 7)).toHost())).toEqual([]);
    await reader.close();
  });

  it("reads only the files that hold the range", async () => {
    const path = join(dir, "ckpt");
    await threeRanks(path);
    await rm(join(path, rankFileName(1, 3)));
    const reader = await openShardedCheckpoint(path);
    expect(Array.from((await reader.read("w", 0, 13)).toHost())).toEqual(Array.from(t.data.slice(0, 13)));
    await expect(reader.read("w", 12, 14)).rejects.toThrow(/ENOENT/);
    await reader.close();
  });

  it("refuses ranges outside the tensor, unknown names, buffers of the wrong size, and reads after close", async () => {
    const path = join(dir, "ckpt");
    await threeRanks(path);
    const reader = await openShardedCheckpoint(path);
    await expect(reader.read("w", 5, 21)).rejects.toThrow(/\[5, 21\) is not a range of tensor "w"'s 20 elements/);
    await expect(reader.read("w", 3, 2)).rejects.toThrow(/\[3, 2\) is not a range/);
    await expect(reader.read("w", 1.5, 2)).rejects.toThrow(/is not a range/);
    await expect(reader.read("v")).rejects.toThrow(/no tensor named "v"; the checkpoint holds 1 \(first: "w"\)/);
    await expect(reader.readInto("w", 0, 2, new Uint8Array(8))).rejects.toThrow(/elements \[0, 2\) of "w" are 16 bytes; the buffer has 8/);
    await reader.close();
    await expect(reader.read("w", 0, 1)).rejects.toThrow(/the reader is closed/);
  });

  it("loads tensors on the device asked for", async () => {
    const path = join(dir, "ckpt");
    await save(path, sampleTensors(), 2);
    const reader = await openShardedCheckpoint(path);
    const got = await reader.read("model.steps", 1, 3, { device: "cpu" });
    expect(got.device).toBe("cpu");
    expect(got.dtype).toBe("int32");
    expect(Array.from(got.toHost())).toEqual([-2147483648, 2147483647]);
    await reader.close();
  });
});

describe("loadShardedCheckpoint: what a rank holding parts of a model reads", () => {
  it("skips, reads ranges and reads whole as part(name) says, at another world size; the IO's load is the whole of it", async () => {
    const tensors = sampleTensors();
    const path = join(dir, "ckpt");
    await save(path, tensors, 3);
    const got = await loadShardedCheckpoint(path, {
      device: "cpu",
      part: (name) => (name === "model.steps" ? null : name === "model.embed.weight" ? { start: 4, end: 23 } : undefined),
    });
    expect(got.meta).toEqual({ world: 3 });
    expect(Object.keys(got.tensors).sort()).toEqual(Object.keys(tensors).filter((n) => n !== "model.steps").sort());
    // The range spans the pieces of more than one rank's file.
    expect(got.tensors["model.embed.weight"].shape).toEqual([19]);
    expect(bitsOf(got.tensors["model.embed.weight"].toHost())).toEqual(bitsOf(tensors["model.embed.weight"].data.slice(4, 23)));
    for (const name of ["model.block.bias", "model.double", "model.scalar"]) {
      expect(got.tensors[name].shape, name).toEqual(tensors[name].shape);
      expect(bitsOf(got.tensors[name].toHost()), name).toEqual(bitsOf(tensors[name].data));
    }
    for (const t of Object.values(got.tensors)) t.dispose();

    const whole = await new ShardedCheckpointIO(simulatedWorld(1)[0]).load(path);
    expect(Object.keys(whole.tensors).sort()).toEqual(Object.keys(tensors).sort());
    for (const t of Object.values(whole.tensors)) t.dispose();
  });

  it("disposes what it read when a later part fails", async () => {
    const path = join(dir, "ckpt");
    await save(path, sampleTensors(), 2);
    const live = memoryStats("cpu").liveTensors;
    await expect(loadShardedCheckpoint(path, { part: (name) => (name === "model.double" ? { start: 0, end: 99 } : undefined) })).rejects.toThrow(/model\.double/);
    expect(memoryStats("cpu").liveTensors).toBe(live);
  });
});
