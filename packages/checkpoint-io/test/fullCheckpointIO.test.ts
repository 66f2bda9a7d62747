/**
 * The "full" format end to end: round trips through real tensors, format checks, atomic saves, and
 * what a caller needs to handle checkpoint paths safely: a directory given where a checkpoint file
 * is expected fails with a sentence (not a bare EISDIR), the temporary names of unfinished atomic
 * writes can be recognised, and a checkpoint's meta can be read from its header alone.
 */
import { isCheckpointIO, CONTRACT_VERSION } from "@fulgur/core";
import { fromHost, memoryStats, type Tensor } from "@fulgur/tensor";
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import {
  CheckpointFormatError,
  FullCheckpointIO,
  SafetensorsFile,
  parseTemporaryName,
  readFullCheckpointMeta,
  readSafetensors,
  readSafetensorsHeader,
  temporaryPathFor,
  writeSafetensors,
} from "../src/index";
import { le, makeTempDir, removeDir, temporaryFiles } from "./helpers";

let dir: string;
beforeEach(async () => {
  dir = await makeTempDir();
});
afterEach(async () => {
  await removeDir(dir);
});

const io = new FullCheckpointIO();

/** Every element compared with Object.is, so -0 and NaN count. */
function expectSameValues(actual: number[], expected: number[], label: string): void {
  expect(actual.length, label).toBe(expected.length);
  actual.forEach((v, i) => expect(Object.is(v, expected[i]), `${label}[${i}]: ${v} vs ${expected[i]}`).toBe(true));
}

function sampleCheckpoint(): { tensors: Record<string, Tensor>; meta: Record<string, unknown> } {
  const base = fromHost(new Float32Array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]), [3, 4], "float32");
  return {
    tensors: {
      f32: fromHost(new Float32Array([1.5, -0, 3.4028234663852886e38, 1e-45, NaN, -Infinity]), [2, 3], "float32"),
      f64: fromHost(new Float64Array([Math.PI, -1e300, 5e-324, -0]), [2, 2], "float64"),
      // Bit patterns that a decode-and-re-encode would lose: NaN payloads, -0, subnormals, -inf.
      bf16: fromHost(new Uint16Array([0x3f80, 0x7fc1, 0xffff, 0x8000, 0x0001, 0xff80, 0x7f7f]), [7], "bfloat16"),
      f16: fromHost(new Uint16Array([0x3c00, 0x7e01, 0x8000, 0x0001, 0x7bff, 0xfc00]), [2, 3], "float16"),
      i32: fromHost(new Int32Array([0, -2147483648, 2147483647, -1]), [4], "int32"),
      // Non-contiguous views: a transpose and an offset slice of the same storage.
      transposed: base.transpose(0, 1),
      sliced: base.slice(1, 1, 3),
      scalar: fromHost(new Float32Array([7]), [], "float32"),
      empty: fromHost(new Float32Array(0), [0, 5], "float32"),
    },
    meta: { step: 1200, epoch: 3, rng: { seed: "12345678901234567890", offset: 96 }, lrs: [0.001, 0.0005], done: false, note: null },
  };
}

describe("FullCheckpointIO", () => {
  it("fulfils the CheckpointIO contract by shape", () => {
    expect(isCheckpointIO(io)).toBe(true);
    expect(io.name).toBe("full");
    expect(io.contractVersion).toBe(CONTRACT_VERSION);
  });

  it("round-trips every dtype bit for bit, strided views as their logical values, and the meta", async () => {
    const ckpt = sampleCheckpoint();
    const path = join(dir, "nested", "dirs", "ckpt.safetensors");
    await io.save(ckpt, path);
    const back = await io.load(path);
    expect(back.meta).toEqual(ckpt.meta);
    expect(Object.keys(back.tensors).sort()).toEqual(Object.keys(ckpt.tensors).sort());
    for (const [name, t] of Object.entries(ckpt.tensors)) {
      const b = back.tensors[name];
      expect(b.dtype, name).toBe(t.dtype);
      expect(b.shape, name).toEqual(t.shape);
      expect(b.device, name).toBe("cpu");
      expect(Array.from(b.toHost()), name).toEqual(Array.from(t.toHost()));
    }
    expectSameValues(back.tensors.f32.toArray(), [1.5, -0, 3.4028234663852886e38, Math.fround(1e-45), NaN, -Infinity], "f32");
    expectSameValues(back.tensors.transposed.toArray(), [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11], "transposed");
    expectSameValues(back.tensors.sliced.toArray(), [1, 2, 5, 6, 9, 10], "sliced");
    expect(Array.from(back.tensors.bf16.toHost())).toEqual([0x3f80, 0x7fc1, 0xffff, 0x8000, 0x0001, 0xff80, 0x7f7f]);
    expect(back.tensors.scalar.shape).toEqual([]);
    expect(back.tensors.scalar.item()).toBe(7);
  });

  it("stores the meta and format markers in __metadata__ and the data as plain little-endian bytes", async () => {
    const path = join(dir, "m.safetensors");
    await io.save({ tensors: { w: fromHost(new Float32Array([1, 2]), [2], "float32") }, meta: { step: 5 } }, path);
    const { metadata, tensors } = await readSafetensors(path);
    expect(metadata).toEqual({ format: "fulgur.full", format_version: "1", fulgur: '{"step":5}' });
    expect(tensors.w.dtype).toBe("F32");
    expect(Array.from(tensors.w.data)).toEqual(le(new Float32Array([1, 2])));
    const header = await readSafetensorsHeader(path);
    expect(header.dataStart % 8).toBe(0);
  });

  it("loads plain safetensors files from other tools with meta {}", async () => {
    const plain = join(dir, "plain.safetensors");
    await writeSafetensors(plain, { x: { dtype: "F32", shape: [1], data: new Uint8Array(new Float32Array([2.5]).buffer) } });
    const a = await io.load(plain);
    expect(a.meta).toEqual({});
    expect(a.tensors.x.toArray()).toEqual([2.5]);
    // PyTorch's save_model marks files {"format": "pt"}: another tool's format, not a Fulgur one.
    const pt = join(dir, "pt.safetensors");
    await writeSafetensors(pt, { x: { dtype: "I32", shape: [1], data: new Uint8Array(new Int32Array([9]).buffer) } }, { format: "pt" });
    const b = await io.load(pt);
    expect(b.meta).toEqual({});
    expect(b.tensors.x.toArray()).toEqual([9]);
  });

  it("refuses unknown Fulgur formats and versions, naming what it found", async () => {
    const cases: [Record<string, string>, RegExp][] = [
      [{ format: "fulgur.full", format_version: "2", fulgur: "{}" }, /fulgur\.full format_version "2"; this reader knows only version "1"/],
      [{ format: "fulgur.full", fulgur: "{}" }, /format_version is missing/],
      [{ format: "fulgur.sharded", format_version: "1" }, /format "fulgur\.sharded", not "fulgur\.full"/],
      [{ fulgur: "{}" }, /has "fulgur" metadata but no "format"/],
    ];
    for (const [metadata, message] of cases) {
      const path = join(dir, `v-${Object.values(metadata).join("-")}.safetensors`);
      await writeSafetensors(path, {}, metadata);
      const err = await io.load(path).then(() => undefined, (e: unknown) => e);
      expect(err, JSON.stringify(metadata)).toBeInstanceOf(CheckpointFormatError);
      expect((err as CheckpointFormatError).problem).toBe("format");
      expect((err as Error).message).toMatch(message);
      expect((err as Error).message).toContain(path);
    }
    const badMeta = join(dir, "badmeta.safetensors");
    await writeSafetensors(badMeta, {}, { format: "fulgur.full", format_version: "1", fulgur: "{not json" });
    await expect(io.load(badMeta)).rejects.toMatchObject({ problem: "metadata", message: expect.stringMatching(/\["fulgur"\] is not valid JSON/) });
  });

  it("leaves the old checkpoint intact and no temporary file when a save fails midway", async () => {
    const path = join(dir, "ckpt.safetensors");
    await io.save({ tensors: { w: fromHost(new Float32Array([1, 2, 3]), [3], "float32") }, meta: { step: 1 } }, path);
    const before = await readFile(path);
    const copied: string[] = [];
    const spy = (name: string, t: Tensor, fail: boolean): Tensor => {
      const original = t.toHost.bind(t);
      t.toHost = () => {
        if (fail) throw new Error(`device error while copying ${name}`);
        copied.push(name);
        return original();
      };
      return t;
    };
    // "a" is float64 (laid out first), "b" float32 second: the failure comes after bytes were written.
    const failing = {
      tensors: {
        a: spy("a", fromHost(new Float64Array(4096), [4096], "float64"), false),
        b: spy("b", fromHost(new Float32Array([9]), [1], "float32"), true),
      },
      meta: { step: 2 },
    };
    await expect(io.save(failing, path)).rejects.toThrow("device error while copying b");
    expect(copied).toEqual(["a"]);
    expect(Buffer.compare(await readFile(path), before)).toBe(0);
    expect(await temporaryFiles(dir)).toEqual([]);
    expect((await io.load(path)).meta).toEqual({ step: 1 });
  });

  it("rejects bad input naming the field, before anything is written", async () => {
    const path = join(dir, "never.safetensors");
    const w = fromHost(new Float32Array([1]), [1], "float32");
    const cases: [unknown, RegExp][] = [
      [{ tensors: { w: 3 }, meta: {} }, /checkpoint\.tensors\["w"\] must be a Tensor/],
      [{ tensors: [], meta: {} }, /checkpoint\.tensors must be an object of tensors by name, got an array/],
      [{ tensors: { w }, meta: { lr: NaN } }, /checkpoint\.meta\.lr is NaN; checkpoint meta must be JSON/],
      [{ tensors: { w }, meta: { opt: { betas: [0.9, undefined] } } }, /checkpoint\.meta\.opt\.betas\[1\] is undefined \(omit the key or use null\)/],
      [{ tensors: { w }, meta: { when: new Date(0) } }, /checkpoint\.meta\.when is a Date/],
      [{ tensors: { w }, meta: { big: 1n } }, /checkpoint\.meta\.big is 1n/],
      [{ tensors: { w }, meta: { "a b": () => 1 } }, /checkpoint\.meta\["a b"\] is a function/],
      [{ tensors: { w }, meta: [] }, /checkpoint\.meta must be a JSON object, got an array/],
    ];
    const cyclic: Record<string, unknown> = {};
    cyclic.self = cyclic;
    cases.push([{ tensors: { w }, meta: cyclic }, /checkpoint\.meta\.self is a circular reference/]);
    for (const [ckpt, message] of cases) {
      await expect(io.save(ckpt as never, path), String(message)).rejects.toThrow(message);
    }
    const disposed = fromHost(new Float32Array([1]), [1], "float32");
    disposed.dispose();
    await expect(io.save({ tensors: { d: disposed }, meta: {} }, path)).rejects.toThrow(/checkpoint\.tensors\["d"\] is a disposed Tensor/);
    expect(existsSync(path)).toBe(false);
    expect(await temporaryFiles(dir)).toEqual([]);
  });

  it("loads integer dtypes of other tools as int32 when they fit, and disposes what it made when one does not", async () => {
    const ok = join(dir, "ints.safetensors");
    await writeSafetensors(ok, {
      i64: { dtype: "I64", shape: [3], data: new Uint8Array(new BigInt64Array([-5n, 0n, 2147483647n]).buffer) },
      u8: { dtype: "U8", shape: [2], data: new Uint8Array([0, 255]) },
      mask: { dtype: "BOOL", shape: [2], data: new Uint8Array([1, 0]) },
      i16: { dtype: "I16", shape: [1], data: new Uint8Array(new Int16Array([-300]).buffer) },
    });
    const { tensors } = await io.load(ok);
    expect(tensors.i64.dtype).toBe("int32");
    expect(tensors.i64.toArray()).toEqual([-5, 0, 2147483647]);
    expect(tensors.u8.toArray()).toEqual([0, 255]);
    expect(tensors.mask.toArray()).toEqual([1, 0]);
    expect(tensors.i16.toArray()).toEqual([-300]);
    for (const t of Object.values(tensors)) t.dispose();

    const bad = join(dir, "overflow.safetensors");
    await writeSafetensors(bad, {
      a: { dtype: "F64", shape: [2], data: new Uint8Array(16) },
      b: { dtype: "I64", shape: [2], data: new Uint8Array(new BigInt64Array([1n, 2147483648n]).buffer) },
    });
    const live = memoryStats("cpu").liveTensors;
    await expect(io.load(bad)).rejects.toMatchObject({
      problem: "conversion",
      message: expect.stringMatching(/tensor "b": I64 loads as int32, but element 1 is 2147483648, outside \[-2147483648, 2147483647\]/),
    });
    expect(memoryStats("cpu").liveTensors).toBe(live);

    const f8 = join(dir, "f8.safetensors");
    await writeSafetensors(f8, { q: { dtype: "F8_E4M3", shape: [1], data: new Uint8Array(1) } });
    await expect(io.load(f8)).rejects.toThrow(/tensor "q": dtype F8_E4M3 has no Fulgur tensor dtype/);
  });

  it("reads only the tensors select keeps: one it leaves out is never converted, so it cannot fail the load", async () => {
    const path = join(dir, "select.safetensors");
    await writeSafetensors(path, {
      "model.a": { dtype: "F32", shape: [2], data: new Uint8Array(new Float32Array([1.5, -2]).buffer) },
      "model.b": { dtype: "I64", shape: [1], data: new Uint8Array(new BigInt64Array([2147483648n]).buffer) },
      "model.c": { dtype: "I32", shape: [1], data: new Uint8Array(new Int32Array([7]).buffer) },
    });
    const seen: string[] = [];
    const { tensors } = await io.load(path, { select: (name) => (seen.push(name), name !== "model.b") });
    expect(seen.sort()).toEqual(["model.a", "model.b", "model.c"]);
    expect(Object.keys(tensors).sort()).toEqual(["model.a", "model.c"]);
    expect(tensors["model.a"].toArray()).toEqual([1.5, -2]);
    expect(tensors["model.c"].toArray()).toEqual([7]);
    for (const t of Object.values(tensors)) t.dispose();
    await expect(io.load(path)).rejects.toThrow(/tensor "model.b": I64 loads as int32/);
  });

  it("removes a checkpoint, ignores one already gone, and refuses to remove a directory", async () => {
    const path = join(dir, "r.safetensors");
    await io.save({ tensors: {}, meta: {} }, path);
    await io.remove(path);
    expect(existsSync(path)).toBe(false);
    await io.remove(path);
    const sub = join(dir, "sharded");
    await mkdir(sub);
    await expect(io.remove(sub)).rejects.toThrow(/is a directory, not a full checkpoint file/);
    expect(existsSync(sub)).toBe(true);
  });
});

function checkpoint(step: number) {
  return { tensors: { w: fromHost(new Float32Array([1, 2, 3]), [3], "float32") }, meta: { loop: { globalStep: step } } };
}

describe("a directory where a checkpoint file is expected", () => {
  it("FullCheckpointIO.load names the directory and the checkpoints in it, ignoring unfinished writes", async () => {
    await io.save(checkpoint(3), join(dir, "last.safetensors"));
    await io.save(checkpoint(2), join(dir, "epoch=0-step=2.safetensors"));
    await writeFile(temporaryPathFor(join(dir, "epoch=0-step=4.safetensors")), "half");
    const err = await io.load(dir).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CheckpointFormatError);
    expect((err as CheckpointFormatError).problem).toBe("not_a_file");
    expect((err as Error).message).toBe(
      `${dir}: is a directory, not a full checkpoint (one .safetensors file); ` +
        `pass one of the checkpoints in it: epoch=0-step=2.safetensors, last.safetensors`,
    );
  });

  it("says so when the directory holds no checkpoint, and the bare reader refuses directories too", async () => {
    const empty = join(dir, "empty");
    await mkdir(empty);
    await expect(io.load(empty)).rejects.toThrow(`${empty}: is a directory, not a full checkpoint (one .safetensors file); it holds no .safetensors file`);
    await expect(SafetensorsFile.open(empty)).rejects.toThrow(`${empty}: is a directory, not a safetensors file`);
  });
});

describe("temporary names of atomic writes", () => {
  it("parseTemporaryName recognises exactly what temporaryPathFor makes", () => {
    const tmp = basename(temporaryPathFor("/x/last.safetensors"));
    expect(parseTemporaryName(tmp)).toEqual({ target: "last.safetensors", pid: process.pid });
    expect(parseTemporaryName("last.safetensors")).toBeUndefined();
    expect(parseTemporaryName("notes.tmp-12")).toBeUndefined();
    expect(parseTemporaryName("a.safetensors.tmp-12-0123456789ab.bak")).toBeUndefined();
    expect(parseTemporaryName("a.safetensors.tmp-12-0123456789AB")).toBeUndefined();
  });
});

describe("readFullCheckpointMeta", () => {
  it("reads the meta from the header without reading tensor data", async () => {
    const path = join(dir, "c.safetensors");
    await io.save(checkpoint(41), path);
    const read = vi.spyOn(SafetensorsFile.prototype, "read");
    try {
      expect(await readFullCheckpointMeta(path)).toEqual({ loop: { globalStep: 41 } });
      expect(read).not.toHaveBeenCalled();
    } finally {
      read.mockRestore();
    }
  });

  it("gives {} for a plain safetensors file and refuses an unknown Fulgur format", async () => {
    const plain = join(dir, "plain.safetensors");
    await writeSafetensors(plain, { w: { dtype: "F32", shape: [1], data: new Uint8Array(4) } }, { format: "pt" });
    expect(await readFullCheckpointMeta(plain)).toEqual({});
    const other = join(dir, "other.safetensors");
    await writeSafetensors(other, { w: { dtype: "F32", shape: [1], data: new Uint8Array(4) } }, { format: "fulgur.sharded" });
    await expect(readFullCheckpointMeta(other)).rejects.toThrow(/is a checkpoint of format "fulgur.sharded"/);
  });
});
