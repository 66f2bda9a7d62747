/**
 * Streaming conversions: sharded to full (a file FullCheckpointIO and Python load), full to
 * sharded, resharding to any world size (in place too), any safetensors dtype moved as bytes, and
 * the memory bound: 64 MiB of tensors converted and resharded while the code's own buffers never
 * exceed twice the largest tensor (4 MiB), or the chunk size when that is smaller.
 */
import { existsSync } from "node:fs";
import { mkdir, readFile, readdir, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FullCheckpointIO, readFullCheckpointMeta, readSafetensors, readSafetensorsHeader, writeSafetensors } from "../src/index";
import {
  BufferTracker,
  SHARDED_INDEX_FILE,
  ShardedCheckpointWriter,
  convertFullToSharded,
  convertShardedToFull,
  openShardedCheckpoint,
  planLayout,
  rankFileName,
  reshardCheckpoint,
} from "../src/sharded/index";
import { bitsOf, numelOf, piece, sampleTensors, simulatedWorld, unitPieces, type HostTensor } from "./fixtures/sharded/simulatedRanks";
import { makeTempDir, removeDir } from "./helpers";

let dir: string;
beforeEach(async () => {
  dir = await makeTempDir();
});
afterEach(async () => {
  await removeDir(dir);
});

const META = { step: 40, optimizer: { format: "fulgur-optimizer", version: 2 } };

async function save(path: string, tensors: Record<string, HostTensor>, world: number): Promise<void> {
  const pieces = unitPieces(tensors, world);
  await Promise.all(simulatedWorld(world).map((c, r) => new ShardedCheckpointWriter(c).write(path, pieces[r], META)));
}

async function expectSharded(path: string, tensors: Record<string, HostTensor>, world: number): Promise<void> {
  const reader = await openShardedCheckpoint(path);
  expect(reader.worldSize).toBe(world);
  expect(reader.meta).toEqual(META);
  expect(reader.names()).toEqual(Object.keys(tensors).sort());
  for (const [name, t] of Object.entries(tensors)) {
    const got = await reader.read(name);
    expect(got.shape, name).toEqual(t.shape);
    expect(bitsOf(got.toHost()), name).toEqual(bitsOf(t.data));
  }
  await reader.close();
}

describe("sharded to full", () => {
  it.each([1, 3])("from world %i: one full checkpoint with the same tensors and meta", async (world) => {
    const tensors = sampleTensors();
    await save(join(dir, "ckpt"), tensors, world);
    const file = join(dir, "full.safetensors");
    const summary = await convertShardedToFull(join(dir, "ckpt"), file);
    expect(summary.tensors).toBe(7);
    const loaded = await new FullCheckpointIO().load(file);
    expect(loaded.meta).toEqual(META);
    expect(await readFullCheckpointMeta(file)).toEqual(META);
    for (const [name, t] of Object.entries(tensors)) {
      expect(loaded.tensors[name].shape, name).toEqual(t.shape);
      expect(bitsOf(loaded.tensors[name].toHost()), name).toEqual(bitsOf(t.data));
    }
    // The same bytes FullCheckpointIO would have written: layout order, header, data.
    const direct = join(dir, "direct.safetensors");
    await new FullCheckpointIO().save(loaded, direct);
    expect(Buffer.compare(await readFile(file), await readFile(direct))).toBe(0);
  });

  it("a failed conversion leaves an existing file untouched and no temporary behind", async () => {
    await save(join(dir, "ckpt"), sampleTensors(), 2);
    const file = join(dir, "full.safetensors");
    await writeFile(file, "previous");
    await truncate(join(dir, "ckpt", rankFileName(1, 2)), 200);
    await expect(convertShardedToFull(join(dir, "ckpt"), file)).rejects.toThrow(/truncated/);
    expect(await readFile(file, "utf8")).toBe("previous");
    expect((await readdir(dir)).filter((n) => n.includes(".tmp-"))).toEqual([]);
  });

  it("refuses partial tensors, naming them", async () => {
    const t: HostTensor = { dtype: "float32", shape: [4], data: new Float32Array(4) };
    const path = join(dir, "ckpt");
    await new ShardedCheckpointWriter(simulatedWorld(1)[0]).write(path, [piece("w", t, 0, 2, true)], {});
    await expect(convertShardedToFull(path, join(dir, "f.safetensors"))).rejects.toThrow(/cannot convert partial tensors .*: "w"/);
    await expect(reshardCheckpoint(path, join(dir, "r"), 2)).rejects.toThrow(/cannot convert partial tensors/);
    expect(await readdir(dir)).toEqual(["ckpt"]);
  });
});

describe("full to sharded and resharding", () => {
  it.each([1, 2, 3, 4])("full to %i ranks, evenly and whole", async (world) => {
    const tensors = sampleTensors();
    await save(join(dir, "ckpt"), tensors, 2);
    const file = join(dir, "full.safetensors");
    await convertShardedToFull(join(dir, "ckpt"), file);
    await convertFullToSharded(file, join(dir, "even"), world);
    await expectSharded(join(dir, "even"), tensors, world);
    await convertFullToSharded(file, join(dir, "whole"), world, "whole");
    await expectSharded(join(dir, "whole"), tensors, world);
    const index = JSON.parse(await readFile(join(dir, "whole", SHARDED_INDEX_FILE), "utf8"));
    for (const [name, t] of Object.entries(index.tensors) as [string, { shape: number[]; pieces: { key: string; start: number; end: number }[] }][]) {
      expect(t.pieces.length, name).toBe(numelOf(t.shape) === 0 ? 0 : 1);
      for (const p of t.pieces) expect([p.key, p.start, p.end]).toEqual([name, 0, numelOf(t.shape)]);
    }
  });

  it("the even layout splits each tensor into contiguous, nearly equal parts; whole balances bytes", () => {
    const source = {
      names: () => ["a", "b", "c"],
      info: (n: string) =>
        ({ a: { shape: [10], dtype: "F32", numel: 10, partial: false }, b: { shape: [2], dtype: "F64", numel: 2, partial: false }, c: { shape: [6], dtype: "F32", numel: 6, partial: false } })[n] as any,
    };
    const even = planLayout(source, 3, "even");
    expect(even.map((rank) => rank.filter((p) => p.name === "a").map((p) => [p.start, p.end]))).toEqual([[[0, 4]], [[4, 8]], [[8, 10]]]);
    expect(even.map((rank) => rank.filter((p) => p.name === "b").map((p) => [p.start, p.end]))).toEqual([[[0, 1]], [[1, 2]], [[2, 2]]]);
    const whole = planLayout(source, 2, "whole");
    expect(whole.map((rank) => rank.map((p) => p.name))).toEqual([["a"], ["c", "b"]]);
    expect(() => planLayout(source, 0, "even")).toThrow(/worldSize must be a positive integer/);
    expect(() => planLayout(source, 2, "round" as any)).toThrow(/layout must be one of even, whole/);
  });

  it.each([
    [4, 1],
    [1, 3],
    [3, 2],
    [2, 4],
    [3, 3],
  ])("reshard from %i to %i ranks", async (n, m) => {
    const tensors = sampleTensors();
    await save(join(dir, "ckpt"), tensors, n);
    await reshardCheckpoint(join(dir, "ckpt"), join(dir, "out"), m);
    await expectSharded(join(dir, "out"), tensors, m);
    expect((await readdir(dir)).sort()).toEqual(["ckpt", "out"]);
  });

  it("reshards a checkpoint into its own directory, replacing it only when the new one is complete", async () => {
    const tensors = sampleTensors();
    const path = join(dir, "ckpt");
    await save(path, tensors, 4);
    await reshardCheckpoint(path, path, 2, "whole");
    await expectSharded(path, tensors, 2);
    expect(await readdir(dir)).toEqual(["ckpt"]);
  });

  it("refuses to write over a directory that is not a sharded checkpoint", async () => {
    await save(join(dir, "ckpt"), sampleTensors(), 2);
    await mkdir(join(dir, "mine"));
    await writeFile(join(dir, "mine", "thesis.tex"), "keep");
    await expect(reshardCheckpoint(join(dir, "ckpt"), join(dir, "mine"), 2)).rejects.toThrow(/has no readable index\.json, so it is not a sharded checkpoint; refusing to replace it/);
    expect(await readFile(join(dir, "mine", "thesis.tex"), "utf8")).toBe("keep");
    expect((await readdir(dir)).sort()).toEqual(["ckpt", "mine"]);
  });

  it("moves any safetensors dtype as bytes: a PyTorch-style file with I64 and U8 survives full → sharded → full", async () => {
    const file = join(dir, "torch.safetensors");
    const i64 = new BigInt64Array([1n, -(2n ** 40n), 3n, 2n ** 62n, 5n]);
    const u8 = new Uint8Array([0, 1, 255, 7, 9, 11]);
    await writeSafetensors(file, {
      ids: { dtype: "I64", shape: [5], data: new Uint8Array(i64.buffer) },
      mask: { dtype: "U8", shape: [2, 3], data: u8 },
    });
    await convertFullToSharded(file, join(dir, "ckpt"), 3);
    const reader = await openShardedCheckpoint(join(dir, "ckpt"));
    expect(reader.meta).toEqual({});
    expect(reader.info("ids").dtype).toBe("I64");
    expect(Array.from(new BigInt64Array((await reader.readBytes("ids", 1, 4)).buffer))).toEqual([-(2n ** 40n), 3n, 2n ** 62n]);
    await reader.close();
    await convertShardedToFull(join(dir, "ckpt"), join(dir, "back.safetensors"));
    const back = await readSafetensors(join(dir, "back.safetensors"));
    expect(Array.from(back.tensors.ids.data)).toEqual(Array.from(new Uint8Array(i64.buffer)));
    expect(back.tensors.mask).toMatchObject({ dtype: "U8", shape: [2, 3] });
    expect(Array.from(back.tensors.mask.data)).toEqual(Array.from(u8));
  });
});

describe("memory stays bounded by the largest tensor", () => {
  const MiB = 1 << 20;
  const count = 16;
  const largest = 4 * MiB;

  /** 64 MiB of float32 tensors, 4 MiB each, every element distinct within a tensor. */
  function bigTensors(): Record<string, HostTensor> {
    const out: Record<string, HostTensor> = {};
    for (let i = 0; i < count; i++) {
      const data = new Float32Array(largest / 4);
      for (let j = 0; j < data.length; j++) data[j] = i * 1e7 + j;
      out[`layer.${String(i).padStart(2, "0")}.weight`] = { dtype: "float32", shape: [1024, 1024], data };
    }
    return out;
  }

  /** Runs `work`, sampling the process's ArrayBuffer bytes meanwhile; returns the growth at the peak. */
  async function arrayBufferGrowth(work: () => Promise<unknown>): Promise<number> {
    const base = process.memoryUsage().arrayBuffers;
    let peak = base;
    const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().arrayBuffers)), 1);
    try {
      await work();
    } finally {
      clearInterval(timer);
    }
    return Math.max(peak, process.memoryUsage().arrayBuffers) - base;
  }

  async function expectSpotChecks(file: string, tensors: Record<string, HostTensor>): Promise<void> {
    const names = Object.keys(tensors);
    const got = await readSafetensors(file, { names: [names[0], names[7], names[15]] });
    for (const name of [names[0], names[7], names[15]]) {
      expect(Buffer.compare(Buffer.from(got.tensors[name].data), Buffer.from(tensors[name].data.buffer)), name).toBe(0);
    }
  }

  it("converts to full, reshards and converts back 64 MiB with buffers under 2 × the largest tensor", async () => {
    const tensors = bigTensors();
    const path = join(dir, "ckpt");
    // World 3: the unit's slices cut through tensors, so pieces straddle files.
    await save(path, tensors, 3);

    const file = join(dir, "full.safetensors");
    const toFull = new BufferTracker();
    const growth = await arrayBufferGrowth(() => convertShardedToFull(path, file, { tracker: toFull }));
    expect(toFull.largest).toBeLessThanOrEqual(2 * largest);
    expect(toFull.peakHeld).toBeLessThanOrEqual(2 * largest);
    expect(toFull.bytesRead).toBe(count * largest);
    // A whole-file or whole-checkpoint buffer anywhere would show here (64 MiB).
    expect(growth).toBeLessThan(8 * largest);
    expect((await readSafetensorsHeader(file)).dataLength).toBe(count * largest);
    await expectSpotChecks(file, tensors);

    const reshard = new BufferTracker();
    await reshardCheckpoint(path, join(dir, "five"), 5, "even", { tracker: reshard });
    expect(reshard.largest).toBeLessThanOrEqual(2 * largest);
    expect(reshard.peakHeld).toBeLessThanOrEqual(2 * largest);

    const back = new BufferTracker();
    await convertFullToSharded(file, join(dir, "whole"), 2, "whole", { tracker: back });
    expect(back.peakHeld).toBeLessThanOrEqual(2 * largest);

    const again = join(dir, "again.safetensors");
    await convertShardedToFull(join(dir, "five"), again);
    expect(Buffer.compare(await readFile(again), await readFile(file))).toBe(0);
    await convertShardedToFull(join(dir, "whole"), again);
    expect(Buffer.compare(await readFile(again), await readFile(file))).toBe(0);
  });

  it("a chunk size smaller than the largest tensor bounds the buffers to the chunk", async () => {
    const tensors = bigTensors();
    const path = join(dir, "ckpt");
    await save(path, tensors, 2);
    const tracker = new BufferTracker();
    await convertShardedToFull(path, join(dir, "full.safetensors"), { tracker, chunkBytes: MiB });
    expect(tracker.largest).toBe(MiB);
    await expectSpotChecks(join(dir, "full.safetensors"), tensors);
    const small = new BufferTracker();
    await reshardCheckpoint(path, join(dir, "three"), 3, "even", { tracker: small, chunkBytes: 100_003 });
    expect(small.largest).toBe(100_000);
    expect(existsSync(join(dir, "three", SHARDED_INDEX_FILE))).toBe(true);
  });
});
