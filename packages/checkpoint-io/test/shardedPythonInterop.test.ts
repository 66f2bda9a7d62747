/**
 * Interop of the sharded format with Python (DESIGN.md, decision 9): fixtures/sharded/written is a
 * checkpoint our writer made at world 3 and written.json what it holds. The writer must still
 * produce exactly those bytes, our reader must assemble them as described, and, where Python has
 * `torch` and `safetensors`, read_sharded_with_python.py must open every rank file with
 * `safe_open` and assemble every tensor from the index's pieces to the same values and bits.
 */
import type { Tensor } from "@fulgur/tensor";
import { spawnSync } from "node:child_process";
import { readFile, readdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openShardedCheckpoint } from "../src/sharded/index";
import { describeCheckpoint } from "./fixtures/fulgurFixture";
import { describeShardedFixture, writeShardedFixture } from "./fixtures/sharded/shardedFixture";
import { makeTempDir, removeDir } from "./helpers";

const fixtures = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "sharded");
const written = join(fixtures, "written");
const hasPython = spawnSync("python3", ["-c", "import torch, safetensors"], { stdio: "ignore" }).status === 0;

let dir: string;
beforeEach(async () => {
  dir = await makeTempDir();
});
afterEach(async () => {
  await removeDir(dir);
});

describe("the checked-in sharded fixture", () => {
  it("is exactly what the writer produces today", async () => {
    await writeShardedFixture(join(dir, "written"));
    const names = (await readdir(written)).sort();
    expect((await readdir(join(dir, "written"))).sort()).toEqual(names);
    for (const name of names) {
      expect(Buffer.compare(await readFile(join(dir, "written", name)), await readFile(join(written, name))), name).toBe(0);
    }
  });

  it("reads back as written.json describes it", async () => {
    const reader = await openShardedCheckpoint(written);
    const tensors: Record<string, Tensor> = {};
    for (const name of reader.names()) tensors[name] = await reader.read(name);
    const expected = JSON.parse(await readFile(join(fixtures, "written.json"), "utf8"));
    expect(describeCheckpoint({ tensors, meta: reader.meta }, { meta: JSON.stringify(reader.meta) })).toEqual(expected);
    expect(describeShardedFixture()).toEqual(expected);
    await reader.close();
  });

  it.skipIf(!hasPython)("Python's safetensors reads every rank file and assembles every tensor from the index", () => {
    const run = spawnSync("python3", [join(fixtures, "read_sharded_with_python.py"), written, "--expect", join(fixtures, "written.json")], { encoding: "utf8" });
    expect(run.stderr).toMatch(/^OK: /m);
    expect(run.status).toBe(0);
  });
});
