/**
 * Interop with Python's `safetensors` (DESIGN.md, decision 9), both ways:
 * - python_written.safetensors, made by make_safetensors_fixture.py with PyTorch, must read back
 *   with every value and bit pattern that python_written.json records;
 * - fulgur_written.safetensors, checked in for read_with_python.py to verify on a machine with
 *   Python, must be exactly what our writer produces today.
 */
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  FullCheckpointIO,
  decodeSafetensors,
  encodeFullCheckpointMetadata,
  encodeSafetensors,
  readSafetensors,
  readSafetensorsHeader,
} from "../src/index";
import { decodeHeaderLength, parseHeader } from "../src/safetensors/format";
import { describeCheckpoint, fulgurFixtureCheckpoint } from "./fixtures/fulgurFixture";
import { makeTempDir, removeDir } from "./helpers";

const fixtures = join(dirname(fileURLToPath(import.meta.url)), "fixtures");
const pythonFile = join(fixtures, "python_written.safetensors");
const pythonJson = join(fixtures, "python_written.json");
const hasPythonFixture = existsSync(pythonFile) && existsSync(pythonJson);

type JsonNumber = number | "NaN" | "Infinity" | "-Infinity" | "-0";
const fromJson = (v: JsonNumber): number =>
  v === "NaN" ? NaN : v === "Infinity" ? Infinity : v === "-Infinity" ? -Infinity : v === "-0" ? -0 : v;
const hex = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString("hex");

function decodeHeaderOf(bytes: Uint8Array) {
  const n = decodeHeaderLength(bytes, "ours");
  return parseHeader(bytes.subarray(8, 8 + n), "ours").tensors;
}

interface Described {
  metadata: Record<string, string>;
  tensors: Record<string, { dtype: string; shape: number[]; values: JsonNumber[]; bits?: number[]; hex?: string }>;
}

let dir: string;
beforeEach(async () => {
  dir = await makeTempDir();
});
afterEach(async () => {
  await removeDir(dir);
});

describe("a file written by Python's safetensors", () => {
  it.skipIf(!hasPythonFixture)(
    "reads every tensor and value (skipped until test/fixtures/make_safetensors_fixture.py has been run with torch + safetensors)",
    async () => {
      const expected = JSON.parse(await readFile(pythonJson, "utf8")) as Described;
      const raw = await readSafetensors(pythonFile);
      expect(raw.metadata).toEqual(expected.metadata);
      expect(Object.keys(raw.tensors).sort()).toEqual(Object.keys(expected.tensors).sort());
      for (const [name, e] of Object.entries(expected.tensors)) {
        expect(raw.tensors[name].dtype, name).toBe(e.dtype);
        expect(raw.tensors[name].shape, name).toEqual(e.shape);
        expect(hex(raw.tensors[name].data), name).toBe(e.hex);
      }

      const { tensors, meta } = await new FullCheckpointIO().load(pythonFile);
      expect(meta).toEqual({}); // {"format": "pt"} is PyTorch's marker, not a Fulgur checkpoint
      const fulgurDtype: Record<string, string> = { F32: "float32", F64: "float64", BF16: "bfloat16", F16: "float16", I32: "int32", I64: "int32" };
      for (const [name, e] of Object.entries(expected.tensors)) {
        const t = tensors[name];
        expect(t.dtype, name).toBe(fulgurDtype[e.dtype]);
        expect(t.shape, name).toEqual(e.shape);
        const values = t.toArray();
        expect(values.length, name).toBe(e.values.length);
        e.values.forEach((v, i) => expect(Object.is(values[i], fromJson(v)), `${name}[${i}]: ${values[i]} vs ${v}`).toBe(true));
        if (e.bits) expect(Array.from(t.toHost()), name).toEqual(e.bits);
      }
      // Our writer lays the same tensors out as Python did: same order, same data bytes.
      const ours = decodeSafetensors(encodeSafetensors(raw.tensors, raw.metadata));
      const pythonHeader = await readSafetensorsHeader(pythonFile);
      const oursHeader = decodeHeaderOf(encodeSafetensors(raw.tensors, raw.metadata));
      expect(oursHeader.map((t) => [t.name, t.dataOffsets])).toEqual(pythonHeader.tensors.map((t) => [t.name, t.dataOffsets]));
      for (const name of Object.keys(raw.tensors)) expect(hex(ours.tensors[name].data)).toBe(hex(raw.tensors[name].data));

      // Independent of the JSON: the values the script asked torch for.
      expect(Array.from(tensors.bias_bf16.toHost()).slice(0, 3)).toEqual([0x3f80, 0xc020, 0x3dcd]);
      expect(tensors.weight_f32.toArray().slice(0, 3)).toEqual([1, -2.5, Math.fround(0.1)]);
      expect(tensors.steps_i32.toArray()).toEqual([0, -2147483648, 2147483647]);
      expect(tensors.index_i64.toArray()).toEqual([-5, 0, 2147483647]);
      expect(tensors.matrix_f64.toArray()).toEqual([Math.PI, -1e300, 5e-324, 2]);
    },
  );
});

describe("the file Fulgur writes for Python to read", () => {
  it("is byte-for-byte the checked-in fulgur_written.safetensors, and reads back as described", async () => {
    const checkpoint = fulgurFixtureCheckpoint();
    const path = join(dir, "fulgur_written.safetensors");
    await new FullCheckpointIO().save(checkpoint, path);
    const written = await readFile(path);
    const checkedIn = join(fixtures, "fulgur_written.safetensors");
    expect(existsSync(checkedIn), "regenerate with: npx tsx test/fixtures/make_fulgur_fixture.ts").toBe(true);
    expect(hex(written)).toBe(hex(await readFile(checkedIn)));

    const description = describeCheckpoint(checkpoint, encodeFullCheckpointMetadata(checkpoint.meta)) as Described;
    expect(description).toEqual(JSON.parse(await readFile(join(fixtures, "fulgur_written.json"), "utf8")));
    const back = await new FullCheckpointIO().load(path);
    expect(back.meta).toEqual(checkpoint.meta);
    expect(describeCheckpoint(back, encodeFullCheckpointMetadata(back.meta))).toEqual(description);
    expect(description.tensors["model.w_f32"].values).toEqual([1, -2.5, Math.fround(0.1), 4, Math.fround(5e-39), "-0"]);
    expect(description.tensors["model.b_bf16"].values).toEqual([1, -2.5, "NaN", "-Infinity"]);
  });
});
