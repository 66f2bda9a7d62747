/**
 * `fulgur checkpoint inspect | convert | reshard` on a checkpoint made by a short `fulgur fit`:
 * names, shapes and sizes from the header; weights for Python with the prefix stripped; a cast to
 * bfloat16; and a converted file that reloads with loadTensors and matches the module's state.
 */
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { FullCheckpointIO, loadTensors, readSafetensors, readSafetensorsHeader, writeSafetensors } from "@fulgur/checkpoint-io";
import { GPT } from "@fulgur/nn";
import type { Tensor } from "@fulgur/tensor";
import type { InspectReport } from "../src/index";
import { cli, tempDir, tinyConfig, writeCorpus, writeJson } from "./helpers";

const GPT_CFG = { dModel: 32, nLayers: 1, nHeads: 2, seqLen: 16, vocabSize: 256 };
let dir: string;
let ckpt: string;
/** The trained module's state as the checkpoint holds it (names without "state_dict."). */
let moduleState: Record<string, Tensor>;

beforeAll(async () => {
  dir = tempDir();
  writeCorpus(dir);
  const cfg = writeJson(join(dir, "fit.json"), tinyConfig({ trainer: { maxSteps: 3, enableProgressBar: false, defaultRootDir: "run", accelerator: "cpu" } }));
  const r = await cli("fit", "-c", cfg);
  expect(r.code).toBe(0);
  ckpt = /checkpoint: (.*)$/m.exec(r.out)![1];
  const { tensors } = await new FullCheckpointIO().load(ckpt);
  moduleState = Object.fromEntries(
    Object.entries(tensors)
      .filter(([k]) => k.startsWith("state_dict."))
      .map(([k, v]) => [k.slice("state_dict.".length), v]),
  );
});

describe("checkpoint inspect", () => {
  it("shows format, step, epoch, strategy and every tensor with totals", async () => {
    const r = await cli("checkpoint", "inspect", ckpt);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^format\s+fulgur\.full version 1$/m);
    expect(r.out).toMatch(/^step\s+3$/m);
    expect(r.out).toMatch(/^epoch\s+0$/m);
    expect(r.out).toMatch(/^strategy\s+single_device \(world size 1\)$/m);
    expect(r.out).toMatch(/^ {2}state_dict\.model\.pos\.weight\s+F32\s+\[16, 32\]\s+2\.00 KiB$/m);
    expect(r.out).toMatch(/^ {2}optimizer\.state\.model\.emb\.weight\.exp_avg\s+F32\s+\[256, 32\]\s+32\.0 KiB$/m);
    expect(r.out).toMatch(/^ {2}model weights \(state_dict\.\*\)\s+17 tensors\s+29,664 elements\s+116 KiB$/m);
    expect(r.out).toMatch(/^ {2}all\s+51 tensors\s+88,992 elements\s+348 KiB$/m);
  });

  it("--json lists every tensor of the header with shape and byte size", async () => {
    const r = await cli("checkpoint", "inspect", ckpt, "--json");
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out) as InspectReport;
    const header = await readSafetensorsHeader(ckpt);
    expect(report.tensors.map((t) => t.name).sort()).toEqual(header.tensors.map((t) => t.name).sort());
    for (const t of header.tensors) {
      const row = report.tensors.find((x) => x.name === t.name)!;
      expect(row).toEqual({ name: t.name, dtype: t.dtype, shape: [...t.shape], numel: t.shape.reduce((a, b) => a * b, 1), bytes: t.byteLength });
    }
    expect(report).toMatchObject({ format: "fulgur.full", formatVersion: "1", step: 3, epoch: 0, strategy: "single_device", worldSize: 1 });
    expect(report.totals.bytes).toBe(header.dataLength);
    expect(report.totals.groups["model weights (state_dict.*)"].numel).toBe(new GPT(GPT_CFG).numParameters());
  });

  it("reads a plain safetensors file and reports missing files as usage errors", async () => {
    const plain = join(dir, "plain.safetensors");
    await writeSafetensors(plain, { w: { dtype: "F32", shape: [2], data: new Uint8Array(8) } }, { format: "pt" });
    const r = await cli("checkpoint", "inspect", plain);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^format\s+pt$/m);
    expect(r.out).toMatch(/^step\s+-$/m);
    const missing = await cli("checkpoint", "inspect", join(dir, "none.safetensors"));
    expect(missing.code).toBe(2);
    expect(missing.err.trim()).toBe(`error: ${join(dir, "none.safetensors")}: no such file`);
    writeFileSync(join(dir, "junk.safetensors"), "not a checkpoint at all");
    const junk = await cli("checkpoint", "inspect", join(dir, "junk.safetensors"));
    expect(junk.code).toBe(1);
    expect(junk.err).toMatch(/junk\.safetensors is not a readable safetensors checkpoint: .*header length/);
  });
});

describe("checkpoint convert", () => {
  it("--weights-only writes the model weights without the state_dict. prefix, and they reload equal", async () => {
    const out = join(dir, "weights.safetensors");
    const r = await cli("checkpoint", "convert", ckpt, out, "--weights-only");
    expect(r.code).toBe(0);
    expect(r.out.trim()).toBe(`wrote ${out}: 17 tensors, 116 KiB; dropped 34 non-weight tensors`);
    const raw = await readSafetensors(out);
    expect(raw.metadata).toEqual({ format: "pt" });
    const loaded = loadTensors(raw.tensors);
    expect(Object.keys(loaded).sort()).toEqual(Object.keys(moduleState).sort());
    expect(Object.keys(loaded)).toContain("model.blocks.0.qkv.weight");
    for (const [name, t] of Object.entries(moduleState)) {
      expect(loaded[name].shape, name).toEqual(t.shape);
      expect(loaded[name].dtype).toBe("float32");
      expect(loaded[name].toArray(), name).toEqual(t.toArray());
    }
  });

  it("--strip-prefix state_dict.model. gives the anchor GPT's names, which a GPT loads strictly", async () => {
    const out = join(dir, "gpt.safetensors");
    const r = await cli("checkpoint", "convert", ckpt, out, "--weights-only", "--strip-prefix", "state_dict.model.");
    expect(r.code).toBe(0);
    const loaded = loadTensors((await readSafetensors(out)).tensors);
    expect(Object.keys(loaded)).toContain("emb.weight");
    expect(Object.keys(loaded)).toContain("blocks.0.fc2.bias");
    const gpt = new GPT(GPT_CFG, { seed: 123 });
    gpt.loadStateDict(loaded, { strict: true });
    const state = gpt.stateDict();
    for (const [name, t] of Object.entries(state)) expect(t.toArray(), name).toEqual(moduleState[`model.${name}`].toArray());
  });

  it("--dtype bfloat16 casts every floating tensor, rounding as the tensor engine does", async () => {
    const out = join(dir, "bf16.safetensors");
    const r = await cli("checkpoint", "convert", ckpt, out, "--weights-only", "--dtype", "bfloat16");
    expect(r.code).toBe(0);
    expect(r.out).toContain("cast 17 to bfloat16");
    const header = await readSafetensorsHeader(out);
    expect(new Set(header.tensors.map((t) => t.dtype))).toEqual(new Set(["BF16"]));
    expect(header.dataLength).toBe(29_664 * 2);
    const loaded = loadTensors((await readSafetensors(out)).tensors);
    for (const [name, t] of Object.entries(moduleState)) {
      expect(loaded[name].dtype).toBe("bfloat16");
      const expected = t.cast("bfloat16");
      expect(Array.from(loaded[name].toHost()), name).toEqual(Array.from(expected.toHost()));
      // bf16 keeps 8 bits of mantissa: within 2^-8 relative of the float32 weights.
      const a = loaded[name].toArray();
      t.toArray().forEach((v, i) => expect(Math.abs(a[i] - v)).toBeLessThanOrEqual(Math.abs(v) * 2 ** -8 + 1e-30));
    }
  });

  it("without --weights-only keeps every tensor and the Trainer metadata, so it still resumes", async () => {
    const out = join(dir, "all.safetensors");
    const r = await cli("checkpoint", "convert", ckpt, out);
    expect(r.code).toBe(0);
    const a = await new FullCheckpointIO().load(ckpt);
    const b = await new FullCheckpointIO().load(out);
    expect(b.meta).toEqual(a.meta);
    expect(Object.keys(b.tensors).sort()).toEqual(Object.keys(a.tensors).sort());
  });

  it("refuses to overwrite without --force, to write over its input, and unknown dtypes", async () => {
    const out = join(dir, "weights.safetensors");
    const exists = await cli("checkpoint", "convert", ckpt, out, "--weights-only");
    expect(exists.code).toBe(2);
    expect(exists.err.trim()).toBe(`error: ${out} already exists; pass --force to replace it`);
    expect((await cli("checkpoint", "convert", ckpt, out, "--weights-only", "--force")).code).toBe(0);
    const same = await cli("checkpoint", "convert", ckpt, ckpt);
    expect(same.code).toBe(2);
    expect(same.err).toContain("expected a path other than the input's");
    const dtype = await cli("checkpoint", "convert", ckpt, join(dir, "x.safetensors"), "--dtype", "int8");
    expect(dtype.code).toBe(2);
    expect(dtype.err.trim()).toBe("error: option '--dtype <dtype>' argument 'int8' is invalid. expected one of float32, float64, bfloat16, float16");
    expect(existsSync(join(dir, "x.safetensors"))).toBe(false);
  });

  it("refuses a prefix that would make two tensors share a name, writing nothing", async () => {
    const src = join(dir, "clash.safetensors");
    const f32 = { dtype: "F32" as const, shape: [1], data: new Uint8Array(4) };
    await writeSafetensors(src, { "a.x": f32, x: f32 });
    const r = await cli("checkpoint", "convert", src, join(dir, "clash-out.safetensors"), "--strip-prefix", "a.");
    expect(r.code).toBe(2);
    expect(r.err.trim()).toBe('error: --strip-prefix "a." maps both "a.x" and "x" to "x"');
    expect(existsSync(join(dir, "clash-out.safetensors"))).toBe(false);
  });
});

describe("checkpoint reshard and sharded convert", () => {
  it("reshards a full checkpoint to 4 ranks, then to 2, and converts back to one file with the same tensors", async () => {
    const four = join(dir, "x4");
    const r = await cli("checkpoint", "reshard", ckpt, four, "--world-size", "4");
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/^wrote .*x4: \d+ tensors over 4 rank file\(s\)/);
    expect(existsSync(join(four, "index.json"))).toBe(true);
    expect(existsSync(join(four, "rank-00003-of-00004.safetensors"))).toBe(true);
    const two = join(dir, "x2");
    expect((await cli("checkpoint", "reshard", four, two, "--world-size", "2", "--layout", "whole")).code).toBe(0);
    const back = join(dir, "back.safetensors");
    const c = await cli("checkpoint", "convert", two, back);
    expect(c.code, c.err).toBe(0);
    expect(c.out).toContain("from a sharded checkpoint, one tensor at a time");
    const original = await new FullCheckpointIO().load(ckpt);
    const restored = await new FullCheckpointIO().load(back);
    expect(Object.keys(restored.tensors).sort()).toEqual(Object.keys(original.tensors).sort());
    for (const [name, t] of Object.entries(original.tensors)) expect(restored.tensors[name].toArray(), name).toEqual(t.toArray());
    expect((await cli("checkpoint", "convert", two, back)).err).toContain("exists; pass --force to replace it");
  });

  it("refuses a world size that is not a positive integer, naming the option", async () => {
    const r = await cli("checkpoint", "reshard", ckpt, join(dir, "bad"), "--world-size", "0");
    expect(r.code).toBe(2);
    expect(r.err).toContain("--world-size");
    expect(existsSync(join(dir, "bad"))).toBe(false);
  });
});
