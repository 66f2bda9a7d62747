/**
 * Saving sharded checkpoints from simulated ranks in one process: round trips at world sizes 1 to
 * 4 over every dtype, the CheckpointIO contract, and what a save must guarantee when it fails or is
 * killed: the previous checkpoint stays intact until the new one is complete, and nothing that is
 * not complete looks like a checkpoint.
 */
import { CONTRACT_VERSION, isCheckpointIO } from "@fulgur/core";
import { fromHost, type Tensor } from "@fulgur/tensor";
import { existsSync } from "node:fs";
import { mkdir, readFile, readdir, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AsyncCheckpointIO, CheckpointFormatError, FullCheckpointIO, readSafetensors } from "../src/index";
import {
  SHARDED_INDEX_FILE,
  SHARDED_PIECES_KEY,
  ShardedCheckpointIO,
  ShardedCheckpointWriter,
  openShardedCheckpoint,
  rankFileName,
  type ShardPiece,
} from "../src/sharded/index";
import { bitsOf, piece, sampleTensors, simulatedWorld, unitPieces, type HostTensor, type SimulatedWorldOptions } from "./fixtures/sharded/simulatedRanks";
import { makeTempDir, removeDir } from "./helpers";

let dir: string;
beforeEach(async () => {
  dir = await makeTempDir();
});
afterEach(async () => {
  await removeDir(dir);
});

/** Every rank saves its pieces; resolves to each rank's result. */
function saveAll(path: string, pieces: ShardPiece[][], meta: Record<string, unknown>, world: SimulatedWorldOptions = {}, id?: string) {
  const coordinators = simulatedWorld(pieces.length, world);
  return Promise.allSettled(coordinators.map((c, r) => new ShardedCheckpointWriter(c).write(path, pieces[r], meta, { id })));
}

async function expectAllFulfilled(results: PromiseSettledResult<void>[]): Promise<void> {
  for (const r of results) if (r.status === "rejected") throw r.reason;
}

async function expectSameAs(path: string, tensors: Record<string, HostTensor>): Promise<void> {
  const reader = await openShardedCheckpoint(path);
  try {
    expect(reader.names()).toEqual(Object.keys(tensors).sort());
    for (const [name, t] of Object.entries(tensors)) {
      const got = await reader.read(name);
      expect(got.shape, name).toEqual(t.shape);
      expect(got.dtype, name).toBe(t.dtype);
      expect(bitsOf(got.toHost()), name).toEqual(bitsOf(t.data));
      got.dispose();
    }
  } finally {
    await reader.close();
  }
}

/** Names beside the checkpoint that a save generated (temporary or aside directories). */
async function leftovers(): Promise<string[]> {
  return (await readdir(dir)).filter((n) => n.includes(".tmp-") || n.includes(".old-"));
}

describe("round trip from simulated ranks", () => {
  it.each([1, 2, 3, 4])("world size %i: every tensor and dtype comes back bit for bit", async (world) => {
    const tensors = sampleTensors();
    const path = join(dir, "ckpt");
    const meta = { step: 100, epoch: 2, optimizer: { format: "fulgur-optimizer", version: 2 }, lrs: [0.001] };
    await expectAllFulfilled(await saveAll(path, unitPieces(tensors, world), meta));

    await expectSameAs(path, tensors);
    const index = JSON.parse(await readFile(join(path, SHARDED_INDEX_FILE), "utf8"));
    expect(index).toMatchObject({ format: "fulgur-sharded", version: 1, world_size: world, meta });
    expect(index.files).toEqual(Array.from({ length: world }, (_, r) => rankFileName(r, world)));
    expect((await readdir(path)).sort()).toEqual([SHARDED_INDEX_FILE, ...index.files].sort());
    expect(index.tensors["model.block.bias"]).toMatchObject({ dtype: "BF16", shape: [9] });
    expect(index.tensors["model.empty"]).toEqual({ dtype: "F32", shape: [0, 3], pieces: [] });
    expect(await leftovers()).toEqual([]);

    // Each rank file is plain safetensors (the strict reader follows the reference rules Python applies).
    for (const f of index.files) {
      const { metadata, tensors: stored } = await readSafetensors(join(path, f));
      expect(metadata.format).toBe("fulgur-sharded-rank");
      for (const [key, raw] of Object.entries(stored)) expect(raw.data.length, key).toBeGreaterThan(0);
    }
  });

  it("stores a whole piece in the tensor's own shape and a part of one as 1-D, under the tensor's name", async () => {
    const path = join(dir, "ckpt");
    await expectAllFulfilled(await saveAll(path, unitPieces(sampleTensors(), 2), {}));
    // The unit's 61 elements split 31/30: the embedding straddles the ranks, everything after it is rank 1's.
    const rank0 = await readSafetensors(join(path, rankFileName(0, 2)));
    expect(Object.keys(rank0.tensors)).toEqual(["model.embed.weight"]);
    expect(rank0.tensors["model.embed.weight"].shape).toEqual([31]);
    const rank1 = await readSafetensors(join(path, rankFileName(1, 2)));
    expect(rank1.tensors["model.embed.weight"].shape).toEqual([4]);
    expect(rank1.tensors["model.block.scale"].shape).toEqual([2, 3]);
    expect(rank1.tensors["model.scalar"].shape).toEqual([]);
  });

  it("keys several pieces of one tensor on one rank apart", async () => {
    const t: HostTensor = { dtype: "float32", shape: [10], data: new Float32Array(10).map((_, i) => i) };
    const path = join(dir, "ckpt");
    await expectAllFulfilled(await saveAll(path, [[piece("w", t, 0, 3), piece("w", t, 7, 10)], [piece("w", t, 3, 7)]], {}));
    const index = JSON.parse(await readFile(join(path, SHARDED_INDEX_FILE), "utf8"));
    expect(index.tensors.w.pieces.map((p: { key: string }) => p.key)).toEqual(["w@0-3", "w", "w@7-10"]);
    await expectSameAs(path, { w: t });
  });

  it("uses the id the caller gives for the temporary directory, and refuses one that is not a plain name", async () => {
    const path = join(dir, "ckpt");
    const seen: string[] = [];
    const results = await saveAll(path, unitPieces(sampleTensors(), 2), {}, { before: async () => void seen.push(...(await readdir(dir))) }, "step-7");
    await expectAllFulfilled(results);
    expect(seen).toContain("ckpt.tmp-step-7");
    const bad = await saveAll(join(dir, "other"), unitPieces(sampleTensors(), 2), {}, {}, "../escape");
    for (const r of bad) expect(r.status === "rejected" && String(r.reason)).toMatch(/save id must be/);
  });
});

describe("failures", () => {
  async function writeOld(path: string): Promise<Record<string, HostTensor>> {
    const old = { w: { dtype: "float32", shape: [4], data: new Float32Array([1, 2, 3, 4]) } as HostTensor };
    await expectAllFulfilled(await saveAll(path, unitPieces(old, 2), { step: 1 }));
    return old;
  }

  it("a rank that fails while writing fails the save on every rank and leaves the previous checkpoint intact", async () => {
    const path = join(dir, "ckpt");
    const old = await writeOld(path);
    const pieces = unitPieces(sampleTensors(), 3);
    const i = pieces[2].findIndex((p) => p.end > p.start);
    const lost = { shape: [pieces[2][i].end - pieces[2][i].start], dtype: pieces[2][i].dtype, isDisposed: false, toHost: () => { throw new Error("device lost"); } };
    pieces[2][i] = { ...pieces[2][i], tensor: lost as unknown as Tensor };
    const results = await saveAll(path, pieces, { step: 2 });
    expect(results.map((r) => r.status)).toEqual(["rejected", "rejected", "rejected"]);
    const reasons = results.map((r) => String((r as PromiseRejectedResult).reason));
    expect(reasons[2]).toMatch(/device lost/);
    expect(reasons[0]).toMatch(/rank 2 wrote no rank-00002-of-00003\.safetensors: it failed with "device lost"/);
    expect(reasons[1]).toMatch(/rank 2/);
    await expectSameAs(path, old);
    expect((await openShardedCheckpoint(path)).meta).toEqual({ step: 1 });
    expect(await leftovers()).toEqual([]);
  });

  it("a save killed before the index leaves the previous checkpoint intact and no directory that looks complete", async () => {
    const path = join(dir, "ckpt");
    const old = await writeOld(path);
    // Collectives: 0 id broadcast, 1 preparation broadcast, 2 barrier after the writes. Rank 0 dies there.
    const killed = new Promise<void>(() => undefined);
    void saveAll(path, unitPieces(sampleTensors(), 2), { step: 2 }, { before: (rank, seq) => (rank === 0 && seq === 2 ? killed : undefined) });
    let tmp: string | undefined;
    for (let i = 0; i < 200 && !tmp; i++) {
      await new Promise((r) => setTimeout(r, 10));
      const t = (await leftovers())[0];
      if (t && existsSync(join(dir, t, rankFileName(1, 2))) && existsSync(join(dir, t, rankFileName(0, 2)))) tmp = t;
    }
    expect(tmp).toMatch(/^ckpt\.tmp-\d+-[0-9a-f]{12}$/);
    expect(existsSync(join(dir, tmp!, SHARDED_INDEX_FILE))).toBe(false);
    await expect(openShardedCheckpoint(join(dir, tmp!))).rejects.toThrow(/has no index\.json, so it is not a sharded checkpoint/);
    await expectSameAs(path, old);
  });

  it("an overwrite keeps the old checkpoint readable until the new one is complete", async () => {
    const path = join(dir, "ckpt");
    const old = await writeOld(path);
    let checked = 0;
    // Rank 1 enters the barrier after the writes only once this check is done, so nothing is committed during it.
    const results = await saveAll(path, unitPieces(sampleTensors(), 2), { step: 2 }, {
      before: async (rank, seq) => {
        if (rank !== 1 || seq !== 2) return;
        const [tmp] = await leftovers();
        expect(existsSync(join(dir, tmp, rankFileName(1, 2)))).toBe(true);
        expect(existsSync(join(dir, tmp, SHARDED_INDEX_FILE))).toBe(false);
        await expectSameAs(path, old);
        checked++;
      },
    });
    await expectAllFulfilled(results);
    expect(checked).toBe(1);
    await expectSameAs(path, sampleTensors());
    expect(await leftovers()).toEqual([]);
  });

  it("refuses to replace a path that is not a sharded checkpoint, and leaves it untouched", async () => {
    const project = join(dir, "project");
    await mkdir(project);
    await writeFile(join(project, "index.json"), '{"name": "my-app"}');
    await writeFile(join(dir, "file"), "data");
    for (const path of [project, join(dir, "file")]) {
      const results = await saveAll(path, unitPieces(sampleTensors(), 2), {});
      for (const r of results) expect(r.status === "rejected" && String(r.reason)).toMatch(/refusing to replace it/);
    }
    expect(await readFile(join(project, "index.json"), "utf8")).toBe('{"name": "my-app"}');
    expect(await readFile(join(dir, "file"), "utf8")).toBe("data");
    expect(await leftovers()).toEqual([]);
  });

  it("bad pieces fail on every rank, naming the piece and the problem", async () => {
    const t: HostTensor = { dtype: "float32", shape: [4], data: new Float32Array(4) };
    const cases: [ShardPiece, RegExp][] = [
      [{ ...piece("w", t, 0, 4), end: 5 }, /pieces\[0\] \("w"\): \[0, 5\) is not a range of the tensor's 4 elements/],
      [{ ...piece("w", t, 0, 4), start: 1 }, /the tensor holds 4 elements, the range \[1, 4\) 3/],
      [{ ...piece("w", t, 0, 4), dtype: "float16" }, /tensor is float32, the piece says float16/],
      [{ ...piece("w", t, 0, 4), globalShape: [-1] }, /globalShape must be an array of non-negative integers/],
    ];
    for (const [bad, message] of cases) {
      const results = await saveAll(join(dir, "ckpt"), [[bad], [piece("v", t, 0, 4)]], {});
      expect(results[0].status === "rejected" && String(results[0].reason)).toMatch(message);
      expect(results[1].status === "rejected" && String(results[1].reason)).toMatch(/rank 0 wrote no/);
      expect(existsSync(join(dir, "ckpt"))).toBe(false);
    }
  });

  it("ranks that disagree on a tensor, or leave part of it out, fail naming it", async () => {
    const t: HostTensor = { dtype: "float32", shape: [4], data: new Float32Array(4) };
    const t2: HostTensor = { dtype: "float32", shape: [2, 2], data: new Float32Array(4) };
    const disagree = await saveAll(join(dir, "a"), [[piece("w", t, 0, 2)], [piece("w", t2, 2, 4)]], {});
    expect(String((disagree[1] as PromiseRejectedResult).reason)).toMatch(/tensor "w" is F32 \[4\] on rank 0 but F32 \[2, 2\] on rank 1/);
    const hole = await saveAll(join(dir, "b"), [[piece("w", t, 0, 1)], [piece("w", t, 3, 4)]], {});
    expect(String((hole[0] as PromiseRejectedResult).reason)).toMatch(/tensor "w": elements \[1, 3\) of 4 are in no piece/);
    const overlap = await saveAll(join(dir, "c"), [[piece("w", t, 0, 3)], [piece("w", t, 2, 4)]], {});
    expect(String((overlap[0] as PromiseRejectedResult).reason)).toMatch(/tensor "w": piece \[2, 4\) in rank-00001-of-00002\.safetensors overlaps piece \[0, 3\)/);
    expect(await readdir(dir)).toEqual([]);
  });

  it("meta that JSON cannot carry fails the save on every rank before anything is written", async () => {
    const results = await saveAll(join(dir, "ckpt"), unitPieces(sampleTensors(), 2), { when: new Date(0) });
    for (const r of results) expect(r.status === "rejected" && String(r.reason)).toMatch(/meta\.when is a Date/);
    expect(await readdir(dir)).toEqual([]);
  });
});

describe("partial tensors", () => {
  it("a tensor declared partial saves with a hole; ranges inside pieces read, the hole and whole loads fail naming it", async () => {
    const t: HostTensor = { dtype: "float32", shape: [8], data: new Float32Array(8).map((_, i) => i) };
    const path = join(dir, "ckpt");
    await expectAllFulfilled(await saveAll(path, [[piece("w", t, 0, 2, true)], [piece("w", t, 6, 8, true)]], {}));
    const reader = await openShardedCheckpoint(path);
    expect(reader.info("w").partial).toBe(true);
    expect(Array.from((await reader.read("w", 6, 8)).toHost())).toEqual([6, 7]);
    await expect(reader.read("w", 1, 7)).rejects.toThrow(/tensor "w" is partial and elements \[2, 6\) are in no piece/);
    await reader.close();
    await expect(new ShardedCheckpointIO(simulatedWorld(1)[0]).load(path)).rejects.toThrow(/"w" is partial/);
  });
});

describe("ShardedCheckpointIO", () => {
  /** Each rank's Checkpoint by the meta.sharded_pieces convention: pieces under keys of its own, replicated tensors whole. */
  function rankCheckpoints(tensors: Record<string, HostTensor>, world: number) {
    return unitPieces(tensors, world).map((pieces, rank) => {
      const own: Record<string, Tensor> = { "state_dict.buffer": fromHost(new Float32Array([rank === 0 ? 1 : 99]), [1], "float32") };
      const described: Record<string, unknown> = {};
      // Empty pieces too: they are how a tensor of no elements (model.empty) is declared.
      for (const p of pieces) {
        own[`${p.name}#${rank}`] = p.tensor;
        described[`${p.name}#${rank}`] = { name: p.name, shape: p.globalShape, start: p.start, end: p.end };
      }
      return { tensors: own, meta: { step: 5, [SHARDED_PIECES_KEY]: described } };
    });
  }

  it("fulfils the CheckpointIO contract by shape", () => {
    const io = new ShardedCheckpointIO(simulatedWorld(1)[0]);
    expect(isCheckpointIO(io)).toBe(true);
    expect(io.name).toBe("sharded");
    expect(io.contractVersion).toBe(CONTRACT_VERSION);
  });

  it.each([1, 3])("saves on every rank of %i and loads whole tensors; replicated tensors come from rank 0", async (world) => {
    const tensors = sampleTensors();
    const path = join(dir, "ckpt");
    const ios = simulatedWorld(world).map((c) => new ShardedCheckpointIO(c));
    const checkpoints = rankCheckpoints(tensors, world);
    await Promise.all(ios.map((io, r) => io.save(checkpoints[r], path)));
    const loaded = await ios[0].load(path);
    expect(loaded.meta).toEqual({ step: 5 });
    expect(Array.from(loaded.tensors["state_dict.buffer"].toHost())).toEqual([1]);
    for (const [name, t] of Object.entries(tensors)) {
      expect(loaded.tensors[name].shape, name).toEqual(t.shape);
      expect(bitsOf(loaded.tensors[name].toHost()), name).toEqual(bitsOf(t.data));
    }
  });

  it("works under AsyncCheckpointIO", async () => {
    const path = join(dir, "ckpt");
    const ios = simulatedWorld(2).map((c) => new AsyncCheckpointIO(new ShardedCheckpointIO(c)));
    const checkpoints = rankCheckpoints(sampleTensors(), 2);
    await Promise.all(ios.map((io, r) => io.save(checkpoints[r], path)));
    await Promise.all(ios.map((io) => io.flush()));
    await expectSameAs(path, { ...sampleTensors(), "state_dict.buffer": { dtype: "float32", shape: [1], data: new Float32Array([1]) } });
  });

  it("a description naming a tensor the checkpoint lacks fails the save on every rank", async () => {
    const ios = simulatedWorld(2).map((c) => new ShardedCheckpointIO(c));
    const ok = rankCheckpoints(sampleTensors(), 2);
    const bad = { tensors: {}, meta: { [SHARDED_PIECES_KEY]: { ghost: { name: "w", shape: [1], start: 0, end: 1 } } } };
    const results = await Promise.allSettled([ios[0].save(ok[0], join(dir, "ckpt")), ios[1].save(bad, join(dir, "ckpt"))]);
    expect(String((results[1] as PromiseRejectedResult).reason)).toMatch(/describes "ghost", which checkpoint.tensors does not hold/);
    expect(String((results[0] as PromiseRejectedResult).reason)).toMatch(/rank 1 wrote no/);
  });

  it("remove deletes a sharded checkpoint, refuses a directory with anything else in it, and ignores a missing path", async () => {
    const io = new ShardedCheckpointIO(simulatedWorld(1)[0]);
    const path = join(dir, "ckpt");
    await io.save({ tensors: { w: fromHost(new Float32Array([1]), [1], "float32") }, meta: {} }, path);
    await writeFile(join(path, "notes.txt"), "mine");
    await expect(io.remove(path)).rejects.toThrow(/holds files that are not part of a sharded checkpoint \(notes\.txt\); refusing to remove it/);
    expect(existsSync(join(path, SHARDED_INDEX_FILE))).toBe(true);
    await rename(join(path, "notes.txt"), join(dir, "notes.txt"));
    await io.remove(path);
    expect(existsSync(path)).toBe(false);
    await io.remove(path);
    await expect(io.remove(join(dir, "notes.txt"))).rejects.toThrow(/is not a directory/);
  });

  it("a rank file is refused by the full loader, by its format name", async () => {
    const path = join(dir, "ckpt");
    await expectAllFulfilled(await saveAll(path, unitPieces(sampleTensors(), 2), {}));
    const err = await new FullCheckpointIO().load(join(path, rankFileName(0, 2))).catch((e) => e);
    expect(err).toBeInstanceOf(CheckpointFormatError);
    expect(String(err)).toMatch(/format "fulgur-sharded-rank"/);
  });
});
