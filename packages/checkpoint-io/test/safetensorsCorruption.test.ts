/**
 * Every way a file can be broken gives its own CheckpointFormatError naming the file and the
 * problem, from the file reader and the in-memory decoder alike.
 */
import { readFile, truncate, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { CheckpointFormatError, type CheckpointFormatProblem } from "../src/errors";
import { decodeSafetensors, readSafetensors, readSafetensorsHeader } from "../src/safetensors/reader";
import { writeSafetensors } from "../src/safetensors/writer";
import { handBuilt, makeTempDir, removeDir } from "./helpers";

let dir: string;
beforeEach(async () => {
  dir = await makeTempDir();
});
afterEach(async () => {
  await removeDir(dir);
});

/** Reads `bytes` both from a file and from memory; both must fail with `problem` and `message`. */
async function expectBroken(bytes: Uint8Array, problem: CheckpointFormatProblem, message: RegExp): Promise<void> {
  const path = join(dir, `broken-${Math.random().toString(36).slice(2)}.safetensors`);
  await writeFile(path, bytes);
  const fromFile = await readSafetensors(path).then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(fromFile).toBeInstanceOf(CheckpointFormatError);
  const err = fromFile as CheckpointFormatError;
  expect(err.message.startsWith(`${path}: `)).toBe(true);
  expect(err.path).toBe(path);
  expect(err.detail).toMatch(message);
  expect(err.problem).toBe(problem);
  // The header-only inspection refuses the same file the same way.
  await expect(readSafetensorsHeader(path)).rejects.toMatchObject({ problem, path });
  let fromMemory: unknown;
  try {
    decodeSafetensors(bytes, "mem");
  } catch (e) {
    fromMemory = e;
  }
  expect(fromMemory).toBeInstanceOf(CheckpointFormatError);
  expect((fromMemory as CheckpointFormatError).problem).toBe(problem);
  expect((fromMemory as CheckpointFormatError).message.startsWith("mem: ")).toBe(true);
}

const entry = (dtype: string, shape: number[], offsets: number[]) =>
  JSON.stringify({ dtype, shape, data_offsets: offsets });

describe("truncation", () => {
  it("names the right problem wherever the file is cut", async () => {
    const path = join(dir, "good.safetensors");
    await writeSafetensors(path, {
      a: { dtype: "F32", shape: [4], data: new Uint8Array(16).fill(1) },
      b: { dtype: "U8", shape: [8], data: new Uint8Array(8).fill(2) },
    });
    const good = new Uint8Array(await readFile(path));
    const n = Number(new DataView(good.buffer).getBigUint64(0, true));
    const cases: [number, CheckpointFormatProblem, RegExp][] = [
      [0, "truncated", /the file is 0 bytes, shorter than the 8-byte header length/],
      [5, "truncated", /the file is 5 bytes/],
      [8, "header_length", new RegExp(`header length ${n} runs past the end of the file \\(8 bytes\\)`)],
      [8 + Math.floor(n / 2), "header_length", /runs past the end of the file/],
      [8 + n, "truncated", /describes 24 data bytes but only 0 follow it \(tensor "a" at data_offsets \[0, 16\] is cut\)/],
      [8 + n + 10, "truncated", /but only 10 follow it \(tensor "a"/],
      [good.length - 1, "truncated", /but only 23 follow it \(tensor "b" at data_offsets \[16, 24\] is cut\)/],
    ];
    for (const [cut, problem, message] of cases) {
      const cutPath = join(dir, `cut-${cut}.safetensors`);
      await writeFile(cutPath, good);
      await truncate(cutPath, cut);
      const err = await readSafetensors(cutPath).then(() => undefined, (e: unknown) => e);
      expect(err, `cut at ${cut}`).toBeInstanceOf(CheckpointFormatError);
      expect((err as CheckpointFormatError).problem, `cut at ${cut}`).toBe(problem);
      expect((err as Error).message, `cut at ${cut}`).toMatch(message);
      expect((err as Error).message).toContain(cutPath);
      await expectBroken(good.subarray(0, cut), problem, message);
    }
  });
});

describe("header", () => {
  it("refuses a header length beyond the format's limit", async () => {
    await expectBroken(handBuilt("{}", [], { length: 1n << 40n }), "header_length", /header length 1099511627776 exceeds the 100000000-byte limit/);
  });

  it("refuses a header length that runs past the end of the file", async () => {
    await expectBroken(handBuilt("{}", [0, 0, 0, 0], { length: 16n }), "header_length", /header length 16 runs past the end/);
  });

  it("refuses invalid JSON", async () => {
    await expectBroken(handBuilt('{"a": {"dtype": "F32",', []), "header", /header is not valid JSON/);
  });

  it("refuses JSON that is not an object", async () => {
    await expectBroken(handBuilt("[1, 2]", []), "header", /must be a JSON object starting with "\{", starts with "\[1, 2\]/);
    await expectBroken(handBuilt('{"a": 3}', []), "header", /tensor "a": entry must be an object, is 3/);
  });

  it("refuses a header that is not UTF-8", async () => {
    const file = handBuilt("{}", []);
    file[9] = 0xff; // inside the padding, which a lax decoder would turn into U+FFFD
    await expectBroken(file, "header", /header is not valid UTF-8/);
  });

  it("refuses metadata that is not a map of strings", async () => {
    await expectBroken(handBuilt('{"__metadata__":{"step":3}}', []), "metadata", /__metadata__\["step"\] must be a string, is 3/);
    await expectBroken(handBuilt('{"__metadata__":[]}', []), "metadata", /__metadata__ must be an object of strings/);
  });
});

describe("tensor entries", () => {
  it("refuses an unknown dtype, listing the known ones", async () => {
    await expectBroken(handBuilt(`{"w":${entry("F128", [1], [0, 16])}}`, new Uint8Array(16)), "dtype", /tensor "w": unknown dtype "F128"; known: BOOL, U8, .*F64, I64, U64/);
  });

  it("refuses a bad shape", async () => {
    await expectBroken(handBuilt(`{"w":${entry("U8", [2.5], [0, 2])}}`, [0, 0]), "shape", /tensor "w": shape must be an array of non-negative integers, is \[2.5\]/);
  });

  it("refuses a byte span that does not match dtype and shape", async () => {
    await expectBroken(handBuilt(`{"w":${entry("F32", [3], [0, 8])}}`, new Uint8Array(8)), "shape", /tensor "w": data_offsets \[0, 8\] span 8 bytes but F32 \[3\] needs 12/);
  });

  it("refuses malformed data_offsets", async () => {
    await expectBroken(handBuilt(`{"w":${entry("U8", [0], [4, 2])}}`, []), "offsets", /data_offsets must be \[begin, end\] with 0 <= begin <= end, is \[4,2\]/);
    await expectBroken(handBuilt(`{"w":${entry("U8", [1], [-1, 0])}}`, []), "offsets", /is \[-1,0\]/);
    await expectBroken(handBuilt('{"w":{"dtype":"U8","shape":[1]}}', []), "offsets", /is undefined/);
  });

  it("refuses overlapping tensors, naming both", async () => {
    const h = `{"a":${entry("F32", [2], [0, 8])},"b":${entry("F32", [2], [4, 12])}}`;
    await expectBroken(handBuilt(h, new Uint8Array(12)), "offsets", /tensor "b" data_offsets \[4, 12\] overlap tensor "a" data_offsets \[0, 8\]/);
  });

  it("refuses a gap between tensors or before the first one", async () => {
    const gap = `{"a":${entry("U8", [2], [0, 2])},"b":${entry("U8", [2], [4, 6])}}`;
    await expectBroken(handBuilt(gap, new Uint8Array(6)), "offsets", /data bytes \[2, 4\) are not covered by any tensor \(gap before tensor "b"/);
    await expectBroken(handBuilt(`{"b":${entry("U8", [2], [1, 3])}}`, new Uint8Array(3)), "offsets", /data bytes \[0, 1\) are not covered/);
  });

  it("refuses bytes after the last tensor", async () => {
    await expectBroken(handBuilt(`{"a":${entry("U8", [2], [0, 2])}}`, [1, 2, 3, 4, 5]), "offsets", /3 bytes after the last tensor \(data ends at 2\) are not covered/);
  });

  it("refuses offsets past the end of the data as truncation", async () => {
    await expectBroken(handBuilt(`{"a":${entry("U8", [64], [0, 64])}}`, new Uint8Array(10)), "truncated", /describes 64 data bytes but only 10 follow it \(tensor "a"/);
  });
});
