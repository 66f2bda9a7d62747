/**
 * index.json validation: every way an index can lie about where a tensor's bytes are is refused
 * with a CheckpointFormatError naming the tensor and the problem, an unknown version is refused by
 * name, and a directory that is not a complete checkpoint (no index, a file, a missing path) says so.
 */
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { CheckpointFormatError } from "../src/index";
import { SHARDED_INDEX_FILE, ShardedCheckpointWriter, openShardedCheckpoint, parseShardedIndex, rankFileName, validateShardedIndex } from "../src/sharded/index";
import { piece, simulatedWorld, type HostTensor } from "./fixtures/sharded/simulatedRanks";
import { makeTempDir, removeDir } from "./helpers";

let dir: string;
beforeEach(async () => {
  dir = await makeTempDir();
});
afterEach(async () => {
  await removeDir(dir);
});

const F0 = rankFileName(0, 2);
const F1 = rankFileName(1, 2);

function validIndex(): any {
  return {
    format: "fulgur-sharded",
    version: 1,
    world_size: 2,
    files: [F0, F1],
    tensors: {
      w: {
        dtype: "F32",
        shape: [2, 4],
        pieces: [
          { file: F1, key: "w", start: 4, end: 8 },
          { file: F0, key: "w", start: 0, end: 4 },
        ],
      },
      b: { dtype: "BF16", shape: [3], pieces: [{ file: F0, key: "b", start: 0, end: 3 }] },
      empty: { dtype: "F32", shape: [0], pieces: [] },
    },
    meta: { step: 3 },
  };
}

/** The CheckpointFormatError validating `index` throws. */
function problemOf(index: unknown): CheckpointFormatError {
  try {
    validateShardedIndex(index, "/ckpt/index.json");
  } catch (e) {
    expect(e).toBeInstanceOf(CheckpointFormatError);
    return e as CheckpointFormatError;
  }
  throw new Error("the index was accepted");
}

describe("validation", () => {
  it("accepts a valid index and returns pieces sorted by start", () => {
    const index = validateShardedIndex(validIndex(), "/ckpt/index.json");
    expect(index.tensors.w.pieces.map((p) => p.start)).toEqual([0, 4]);
    expect(index.meta).toEqual({ step: 3 });
    expect(parseShardedIndex(JSON.stringify(validIndex()), "x").world_size).toBe(2);
  });

  it("refuses an unknown version, naming the version found", () => {
    const e = problemOf({ ...validIndex(), version: 2 });
    expect(e.problem).toBe("format");
    expect(e.message).toBe("/ckpt/index.json: fulgur-sharded version 2; this reader knows only version 1 (written by a newer Fulgur? upgrade @fulgur/checkpoint-io)");
    expect(problemOf({ ...validIndex(), version: undefined }).message).toMatch(/version is missing/);
  });

  it("refuses another format, or none", () => {
    expect(problemOf({ ...validIndex(), format: "fulgur.full" }).message).toMatch(/is of format "fulgur.full", not "fulgur-sharded"/);
    expect(problemOf({ ...validIndex(), format: undefined }).message).toMatch(/has no "format"/);
    expect(problemOf([1, 2]).problem).toBe("header");
    const e = (() => {
      try {
        parseShardedIndex("{not json", "/ckpt/index.json");
      } catch (err) {
        return err as CheckpointFormatError;
      }
    })();
    expect(e?.problem).toBe("header");
  });

  const cases: [string, (i: any) => void, string, RegExp][] = [
    ["a piece past the end", (i) => (i.tensors.w.pieces[0].end = 9), "offsets", /tensor "w": piece 0: \[4, 9\) runs past the tensor's 8 elements/],
    ["an empty piece", (i) => (i.tensors.w.pieces[0].start = 8), "offsets", /tensor "w": piece 0: \[8, 8\) is empty or reversed/],
    ["a negative start", (i) => (i.tensors.w.pieces[1].start = -1), "offsets", /tensor "w": piece 1: start and end must be non-negative integers/],
    ["overlapping pieces", (i) => (i.tensors.w.pieces[0].start = 3), "offsets", /tensor "w": piece \[3, 8\) in rank-00001-of-00002.safetensors overlaps piece \[0, 4\) in rank-00000-of-00002.safetensors/],
    ["a hole", (i) => (i.tensors.w.pieces[0].start = 5), "offsets", /tensor "w": elements \[4, 5\) of 8 are in no piece/],
    ["a missing tail", (i) => (i.tensors.w.pieces = [i.tensors.w.pieces[1]]), "offsets", /tensor "w": elements \[4, 8\) of 8 are in no piece/],
    ["two pieces in one stored tensor", (i) => (i.tensors.b.pieces[0].key = "w"), "offsets", /tensor "b": piece \[0, 3\) is key "w" of rank-00000-of-00002.safetensors, which a piece of tensor "w" already uses/],
    ["a file not in the list", (i) => (i.tensors.b.pieces[0].file = "other.safetensors"), "header", /tensor "b": piece 0: file "other.safetensors" is not one of the checkpoint's files/],
    ["a file outside the directory", (i) => (i.files[1] = "../rank-00001-of-00002.safetensors"), "header", /files\[1\] must be a plain .safetensors file name/],
    ["a hidden file", (i) => (i.files[1] = ".x.safetensors"), "header", /files\[1\] must be a plain/],
    ["a duplicate file", (i) => (i.files[1] = F0), "header", /files\[1\] "rank-00000-of-00002.safetensors" appears twice/],
    ["files not matching world_size", (i) => (i.world_size = 3), "header", /files must list one file per rank \(3\), is 2 entries/],
    ["a bad world_size", (i) => (i.world_size = 0), "header", /world_size must be a positive integer, is 0/],
    ["an unknown dtype", (i) => (i.tensors.b.dtype = "F128"), "dtype", /tensor "b": unknown dtype "F128"/],
    ["a bad shape", (i) => (i.tensors.b.shape = [3.5]), "shape", /tensor "b": shape must be an array of non-negative integers, is \[3.5\]/],
    ["a non-boolean partial", (i) => (i.tensors.b.partial = "yes"), "header", /tensor "b": partial must be true or false/],
    ["pieces not an array", (i) => (i.tensors.b.pieces = {}), "header", /tensor "b": pieces must be an array/],
    ["an empty key", (i) => (i.tensors.b.pieces[0].key = ""), "header", /tensor "b": piece 0: key must be a non-empty string/],
    ["meta not an object", (i) => (i.meta = [1]), "metadata", /meta must be a JSON object/],
    ["tensors missing", (i) => delete i.tensors, "header", /tensors must be an object of tensors by name, is missing/],
  ];
  it.each(cases)("refuses %s, naming the tensor and the problem", (_what, mutate, problem, message) => {
    const index = validIndex();
    mutate(index);
    const e = problemOf(index);
    expect(e.problem).toBe(problem);
    expect(e.message).toMatch(message);
    expect(e.path).toBe("/ckpt/index.json");
  });

  it("allows a hole in a tensor declared partial, but never an overlap", () => {
    const index = validIndex();
    index.tensors.w.partial = true;
    index.tensors.w.pieces[0].start = 6;
    expect(validateShardedIndex(index, "i").tensors.w.partial).toBe(true);
    index.tensors.w.pieces[0].start = 2;
    expect(problemOf(index).message).toMatch(/overlaps/);
  });
});

describe("opening", () => {
  async function saved(path: string): Promise<void> {
    const t: HostTensor = { dtype: "float32", shape: [4], data: new Float32Array([1, 2, 3, 4]) };
    const world = simulatedWorld(2);
    await Promise.all(world.map((c, r) => new ShardedCheckpointWriter(c).write(path, [piece("w", t, 2 * r, 2 * r + 2)], { step: 1 })));
  }

  it("refuses an index of an unknown version on open, naming it", async () => {
    const path = join(dir, "ckpt");
    await saved(path);
    const index = JSON.parse(await readFile(join(path, SHARDED_INDEX_FILE), "utf8"));
    await writeFile(join(path, SHARDED_INDEX_FILE), JSON.stringify({ ...index, version: 7 }));
    await expect(openShardedCheckpoint(path)).rejects.toThrow(/index\.json: fulgur-sharded version 7; this reader knows only version 1/);
  });

  it("a directory without index.json is not a checkpoint, a file is not one either", async () => {
    await mkdir(join(dir, "half"));
    await writeFile(join(dir, "half", F0), "x");
    await expect(openShardedCheckpoint(join(dir, "half"))).rejects.toThrow(/has no index\.json, so it is not a sharded checkpoint/);
    await writeFile(join(dir, "file.safetensors"), "x");
    await expect(openShardedCheckpoint(join(dir, "file.safetensors"))).rejects.toThrow(/is a file, not a sharded checkpoint/);
    await expect(openShardedCheckpoint(join(dir, "nothing"))).rejects.toMatchObject({ code: "ENOENT" });
  });

  it("when a save was interrupted between its renames, the error says where both complete checkpoints are", async () => {
    const path = join(dir, "ckpt");
    await saved(path);
    await rename(path, `${path}.old-123-abcdefabcdef`);
    await saved(join(dir, "new"));
    await rename(join(dir, "new"), `${path}.tmp-456-0123456789ab`);
    await expect(openShardedCheckpoint(path)).rejects.toThrow(
      /no such sharded checkpoint; a save was interrupted while replacing it, and these complete checkpoints remain beside it: ckpt\.old-123-abcdefabcdef, ckpt\.tmp-456-0123456789ab/,
    );
  });

  it("checks each rank file against the index when it is first read, naming the file, key and tensor", async () => {
    const path = join(dir, "ckpt");
    await saved(path);
    const index = JSON.parse(await readFile(join(path, SHARDED_INDEX_FILE), "utf8"));
    index.tensors.w.dtype = "I32";
    await writeFile(join(path, SHARDED_INDEX_FILE), JSON.stringify(index));
    const reader = await openShardedCheckpoint(path);
    const err = await reader.read("w").catch((e) => e);
    expect(err).toBeInstanceOf(CheckpointFormatError);
    expect(err.path).toBe(join(path, F0));
    expect(err.message).toMatch(/tensor "w" is F32, but the index says piece \[0, 2\) of tensor "w" is I32/);
    await reader.close();

    index.tensors.w.dtype = "F32";
    index.tensors.w.pieces[1].key = "v";
    await writeFile(join(path, SHARDED_INDEX_FILE), JSON.stringify(index));
    const again = await openShardedCheckpoint(path);
    await expect(again.read("w", 0, 2)).resolves.toBeDefined();
    await expect(again.read("w", 2, 4)).rejects.toThrow(/rank-00001-of-00002\.safetensors: has no tensor "v", where the index puts piece \[2, 4\) of tensor "w"/);
    await again.close();
  });
});
