/** The bytes-level reader and writer: layout, alignment, metadata, every dtype, atomic writes. */
import { existsSync } from "node:fs";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SAFETENSORS_DTYPES, safetensorsItemsize, type RawTensor } from "../src/safetensors/format";
import { decodeSafetensors, readSafetensors, readSafetensorsHeader } from "../src/safetensors/reader";
import { encodeSafetensors, writeSafetensors, writeSafetensorsLazy } from "../src/safetensors/writer";
import { handBuilt, le, makeTempDir, removeDir, temporaryFiles } from "./helpers";

let dir: string;
beforeEach(async () => {
  dir = await makeTempDir();
});
afterEach(async () => {
  await removeDir(dir);
});

const bytes = (...v: number[]) => new Uint8Array(v);

describe("layout", () => {
  it("matches a hand-built file byte for byte: metadata first, larger items first, names sorted", () => {
    const a = new Float32Array([1, -2]);
    const z = new Float32Array([0.5]);
    const m = bytes(7, 8, 9);
    // Inserted in the "wrong" order: the writer must sort by item size (4 before 1), then by name.
    const encoded = encodeSafetensors(
      { m: { dtype: "U8", shape: [3], data: m }, z: { dtype: "F32", shape: [1], data: new Uint8Array(z.buffer) }, a: { dtype: "F32", shape: [2], data: new Uint8Array(a.buffer) } },
      { note: "hi" },
    );
    const expected = handBuilt(
      '{"__metadata__":{"note":"hi"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' +
        '"z":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},"m":{"dtype":"U8","shape":[3],"data_offsets":[12,15]}}',
      [...le(a), ...le(z), 7, 8, 9],
    );
    expect(Array.from(encoded)).toEqual(Array.from(expected));
  });

  it("pads the header with spaces so the data starts on a multiple of 8, for every header length", () => {
    for (let len = 1; len <= 16; len++) {
      const name = "x".repeat(len);
      const encoded = encodeSafetensors({ [name]: { dtype: "F64", shape: [1], data: new Uint8Array(8) } });
      const n = Number(new DataView(encoded.buffer).getBigUint64(0, true));
      expect(n % 8).toBe(0);
      const json = new TextDecoder().decode(encoded.subarray(8, 8 + n));
      expect(json.trimEnd()).toBe(`{"${name}":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}`);
      expect(json.length - json.trimEnd().length).toBeLessThan(8);
      expect(/^ *$/.test(json.slice(json.trimEnd().length))).toBe(true);
      expect(encoded.length).toBe(8 + n + 8);
    }
  });

  it("orders dtypes as Python's safetensors does and aligns every tensor to its own item size", () => {
    const tensors: Record<string, RawTensor> = {};
    for (const d of SAFETENSORS_DTYPES) tensors[`t_${d}`] = { dtype: d, shape: [3], data: new Uint8Array(3 * safetensorsItemsize(d)) };
    const prefix = encodeSafetensors(tensors);
    const n = Number(new DataView(prefix.buffer).getBigUint64(0, true));
    const header = JSON.parse(new TextDecoder().decode(prefix.subarray(8, 8 + n)));
    expect(Object.keys(header)).toEqual(
      ["U64", "I64", "F64", "C64", "F32", "U32", "I32", "BF16", "F16", "U16", "I16", "F8_E8M0", "F8_E4M3", "F8_E5M2", "I8", "U8", "BOOL"].map((d) => `t_${d}`),
    );
    for (const d of SAFETENSORS_DTYPES) {
      const [begin] = header[`t_${d}`].data_offsets as number[];
      expect((8 + n + begin) % safetensorsItemsize(d), d).toBe(0);
    }
  });

  it("writes an empty file as a bare header and reads it back", async () => {
    const path = join(dir, "empty.safetensors");
    await writeSafetensors(path, {});
    expect(Array.from(await readFile(path))).toEqual(Array.from(handBuilt("{}", [])));
    expect(await readSafetensors(path)).toEqual({ metadata: {}, tensors: {} });
  });
});

describe("round trip", () => {
  it("keeps every dtype's bytes, shape (scalars and zero-size too) and the metadata", async () => {
    const tensors: Record<string, RawTensor> = {};
    let seed = 1;
    for (const d of SAFETENSORS_DTYPES) {
      const shape = [2, 3];
      const data = new Uint8Array(6 * safetensorsItemsize(d));
      for (let i = 0; i < data.length; i++) data[i] = (seed = (seed * 1103515245 + 12345) >>> 0) >>> 24;
      tensors[`w.${d}`] = { dtype: d, shape, data };
    }
    tensors["scalar"] = { dtype: "F32", shape: [], data: new Uint8Array(new Float32Array([3.5]).buffer) };
    tensors["empty"] = { dtype: "BF16", shape: [0, 4], data: new Uint8Array(0) };
    const metadata = { format: "pt", "utf-8 ✓": "välue \"quoted\"\n", empty: "" };
    const path = join(dir, "sub", "dir", "all.safetensors");
    await writeSafetensors(path, tensors, metadata);
    const back = await readSafetensors(path);
    expect(back.metadata).toEqual(metadata);
    expect(Object.keys(back.tensors).sort()).toEqual(Object.keys(tensors).sort());
    for (const [name, t] of Object.entries(tensors)) {
      expect(back.tensors[name].dtype, name).toBe(t.dtype);
      expect(back.tensors[name].shape, name).toEqual(t.shape);
      expect(Array.from(back.tensors[name].data), name).toEqual(Array.from(t.data));
    }
    // The in-memory decoder agrees with the file reader on the same bytes.
    const decoded = decodeSafetensors(new Uint8Array(await readFile(path)));
    expect(Array.from(decoded.tensors["w.BF16"].data)).toEqual(Array.from(tensors["w.BF16"].data));
  });

  it("keeps a tensor named __proto__ as an ordinary entry", async () => {
    const path = join(dir, "proto.safetensors");
    const tensors = JSON.parse('{"__proto__": {"dtype": "U8", "shape": [1], "data": null}}');
    tensors["__proto__"].data = bytes(42);
    await writeSafetensors(path, tensors);
    const back = await readSafetensors(path);
    expect(Object.keys(back.tensors)).toEqual(["__proto__"]);
    expect(Array.from(back.tensors["__proto__"].data)).toEqual([42]);
    expect(Object.getPrototypeOf(back.tensors)).toBe(Object.prototype);
  });

  it("reads only the tensors asked for, and names one that is missing", async () => {
    const path = join(dir, "sel.safetensors");
    await writeSafetensors(path, { a: { dtype: "U8", shape: [1], data: bytes(1) }, b: { dtype: "U8", shape: [2], data: bytes(2, 3) } });
    const some = await readSafetensors(path, { names: ["b"] });
    expect(Object.keys(some.tensors)).toEqual(["b"]);
    expect(Array.from(some.tensors.b.data)).toEqual([2, 3]);
    await expect(readSafetensors(path, { names: ["c"] })).rejects.toThrow(/no tensor named "c"/);
  });

  it("inspects the header without the data: names, dtypes, shapes, offsets, sizes", async () => {
    const path = join(dir, "h.safetensors");
    await writeSafetensors(path, { b: { dtype: "I64", shape: [2], data: new Uint8Array(16) }, a: { dtype: "BF16", shape: [1, 3], data: new Uint8Array(6) } }, { k: "v" });
    const h = await readSafetensorsHeader(path);
    expect(h.metadata).toEqual({ k: "v" });
    expect(h.tensors).toEqual([
      { name: "b", dtype: "I64", shape: [2], dataOffsets: [0, 16], byteLength: 16 },
      { name: "a", dtype: "BF16", shape: [1, 3], dataOffsets: [16, 22], byteLength: 6 },
    ]);
    expect(h.dataStart % 8).toBe(0);
    expect(h.fileSize).toBe(h.dataStart + 22);
  });

  it("accepts an unpadded header and tensors listed out of data order, as other writers may produce", () => {
    const file = handBuilt(
      '{"b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}',
      [1, 2, 3],
      { pad: false },
    );
    const { tensors } = decodeSafetensors(file);
    expect(Array.from(tensors.a.data)).toEqual([1, 2]);
    expect(Array.from(tensors.b.data)).toEqual([3]);
  });
});

describe("writer input checks", () => {
  it("refuses data whose length disagrees with dtype and shape, naming the tensor, before touching the disk", async () => {
    const path = join(dir, "bad.safetensors");
    await expect(writeSafetensors(path, { w: { dtype: "F32", shape: [2, 2], data: new Uint8Array(12) } })).rejects.toThrow(
      /tensor "w": data is 12 bytes but F32 \[2, 2\] needs 16/,
    );
    await expect(writeSafetensors(path, { w: { dtype: "F12" as never, shape: [1], data: new Uint8Array(1) } })).rejects.toThrow(
      /tensor "w": dtype "F12" is not one of BOOL, U8/,
    );
    await expect(writeSafetensors(path, { w: { dtype: "U8", shape: [-1], data: new Uint8Array(0) } })).rejects.toThrow(
      /tensor "w": shape must be an array of non-negative integers, is \[-1\]/,
    );
    await expect(writeSafetensors(path, { __metadata__: { dtype: "U8", shape: [0], data: new Uint8Array(0) } })).rejects.toThrow(/reserved/);
    await expect(writeSafetensors(path, {}, { n: 1 as never })).rejects.toThrow(/metadata\["n"\] must be a string, is 1/);
    expect(existsSync(path)).toBe(false);
    expect(await temporaryFiles(dir)).toEqual([]);
  });
});

describe("atomic writes", () => {
  it("leaves the previous file intact and no temporary file when a write fails midway", async () => {
    const path = join(dir, "ckpt.safetensors");
    await writeSafetensors(path, { old: { dtype: "U8", shape: [2], data: bytes(1, 2) } });
    const before = await readFile(path);
    let produced = 0;
    const failing = writeSafetensorsLazy(path, [
      { name: "a", dtype: "F64", shape: [1024], bytes: () => (produced++, new Uint8Array(8192)) },
      { name: "b", dtype: "F32", shape: [4], bytes: () => { throw new Error("device lost while copying b"); } },
    ]);
    await expect(failing).rejects.toThrow("device lost while copying b");
    expect(produced).toBe(1); // the first tensor really was written to the temporary file
    expect(Buffer.compare(await readFile(path), before)).toBe(0);
    expect(await temporaryFiles(dir)).toEqual([]);
  });

  it("removes the temporary file when a producer returns the wrong number of bytes", async () => {
    const path = join(dir, "short.safetensors");
    await expect(
      writeSafetensorsLazy(path, [{ name: "a", dtype: "F32", shape: [4], bytes: () => new Uint8Array(15) }]),
    ).rejects.toThrow(/tensor "a": data is 15 bytes but F32 \[4\] needs 16/);
    expect(existsSync(path)).toBe(false);
    expect(await temporaryFiles(dir)).toEqual([]);
  });

  it("replaces an existing file in one step", async () => {
    const path = join(dir, "r.safetensors");
    await writeFile(path, "not a checkpoint");
    await writeSafetensors(path, { x: { dtype: "I8", shape: [1], data: bytes(255) } });
    const back = await readSafetensors(path);
    expect(Array.from(back.tensors.x.data)).toEqual([255]);
    expect(await temporaryFiles(dir)).toEqual([]);
  });
});
