/**
 * The directory swap at the end of a save (directoryCommit.ts), with the filesystem failing at its
 * worst moment: the new directory cannot be renamed into place after the old one was moved aside.
 * The old checkpoint must be back at its path, whole, and the save must fail on every rank.
 */
import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, expect, it, vi } from "vitest";
import { ShardedCheckpointWriter, openShardedCheckpoint } from "../src/sharded/index";
import { piece, simulatedWorld, type HostTensor } from "./fixtures/sharded/simulatedRanks";
import { makeTempDir, removeDir } from "./helpers";

const failing = vi.hoisted(() => ({ renameFrom: undefined as string | undefined }));
vi.mock("node:fs/promises", async (importOriginal) => {
  const actual = await importOriginal<typeof import("node:fs/promises")>();
  return {
    ...actual,
    rename: async (from: string, to: string) => {
      if (failing.renameFrom !== undefined && String(from).includes(failing.renameFrom)) {
        throw Object.assign(new Error(`EIO: simulated failure, rename '${from}'`), { code: "EIO" });
      }
      return actual.rename(from, to);
    },
  };
});

let dir: string;
beforeEach(async () => {
  dir = await makeTempDir();
});
afterEach(async () => {
  failing.renameFrom = undefined;
  await removeDir(dir);
});

function save(path: string, values: number[]) {
  const t: HostTensor = { dtype: "float32", shape: [values.length], data: new Float32Array(values) };
  const half = values.length / 2;
  return Promise.allSettled(
    simulatedWorld(2).map((c, r) => new ShardedCheckpointWriter(c).write(path, [piece("w", t, r * half, (r + 1) * half)], { values }, { id: `try-${values[0]}` })),
  );
}

it("when the new directory cannot be renamed into place, the old checkpoint is renamed back and the save fails everywhere", async () => {
  const path = join(dir, "ckpt");
  expect((await save(path, [1, 2, 3, 4])).every((r) => r.status === "fulfilled")).toBe(true);
  failing.renameFrom = "ckpt.tmp-try-5";
  const results = await save(path, [5, 6, 7, 8]);
  for (const r of results) expect(r.status === "rejected" && String(r.reason)).toMatch(/EIO: simulated failure/);
  const reader = await openShardedCheckpoint(path);
  expect(reader.meta).toEqual({ values: [1, 2, 3, 4] });
  expect(Array.from((await reader.read("w")).toHost())).toEqual([1, 2, 3, 4]);
  await reader.close();
  // Neither the aside copy nor the failed temporary directory is left behind.
  expect(await readdir(dir)).toEqual(["ckpt"]);
  expect(existsSync(join(path, "index.json"))).toBe(true);
});
