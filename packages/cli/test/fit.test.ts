/**
 * `fulgur fit`: a tiny GPT trained end to end from a config file, and config errors reported with
 * field, value and what is allowed before any training starts.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { readSafetensorsHeader } from "@fulgur/checkpoint-io";
import { applyOverrides, parseOverride, parseOverrideValue } from "../src/index";
import { cli, tempDir, tinyConfig, writeCorpus, writeJson } from "./helpers";

let dir: string;

beforeAll(() => {
  dir = tempDir();
  writeCorpus(dir);
});

describe("fulgur fit: end to end", () => {
  it("trains the tiny config from YAML and writes a checkpoint at the last step", async () => {
    const cfg = join(dir, "tiny.yaml");
    writeFileSync(
      cfg,
      `# the tiny test model
model:
  config: { dModel: 32, nLayers: 1, nHeads: 2, seqLen: 16 }
  lr: 0.01
data:
  paths: [data]
  batchSize: 4
  valFraction: 0.2
trainer:
  maxSteps: 5
  logEveryNSteps: 1
  enableProgressBar: false
  defaultRootDir: yaml-run
  accelerator: cpu
`,
    );
    const r = await cli("fit", "--config", cfg);
    expect(r.err).toContain("GPT dModel=32 nLayers=1 nHeads=2 seqLen=16 vocab=256");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^fit done: 5 steps, train_loss \d+\.\d{4}/);
    const ckpt = /checkpoint: (.*)$/m.exec(r.out)![1];
    expect(ckpt).toBe(join(dir, "yaml-run", "fulgur_logs", "version_0", "checkpoints", "last.safetensors"));
    const header = await readSafetensorsHeader(ckpt);
    const meta = JSON.parse(header.metadata.fulgur);
    expect(meta.loop.globalStep).toBe(5);
    const names = header.tensors.map((t) => t.name);
    expect(names).toContain("state_dict.model.blocks.0.qkv.weight");
    expect(header.tensors.find((t) => t.name === "state_dict.model.pos.weight")!.shape).toEqual([16, 32]);
    expect(names.some((n) => n.startsWith("model.blocks.1"))).toBe(false);
    // It learned: the loss logged at every step went down from the first step to the last.
    const csv = readFileSync(join(dir, "yaml-run", "fulgur_logs", "version_0", "metrics.csv"), "utf8").trim().split("\n");
    const col = csv[0].split(",").indexOf("train_loss");
    const losses = csv.slice(1).map((l) => Number(l.split(",")[col])).filter((v) => Number.isFinite(v));
    expect(losses.length).toBe(5);
    expect(losses[4]).toBeLessThan(losses[0] - 0.05);
    expect(Number(/train_loss (\S+)/.exec(r.out)![1])).toBeCloseTo(losses[4], 4);
  });

  it("applies --set overrides (numbers, booleans, strings) over the file", async () => {
    const cfg = writeJson(join(dir, "tiny.json"), tinyConfig());
    const r = await cli("fit", "-c", cfg, "--set", "trainer.maxSteps=2", "--set", "trainer.defaultRootDir=set-run", "--set", "trainer.enableCheckpointing=false");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^fit done: 2 steps/);
    expect(r.out).not.toContain("checkpoint:");
    expect(existsSync(join(dir, "set-run", "fulgur_logs", "version_0", "metrics.csv"))).toBe(true);
    expect(existsSync(join(dir, "set-run", "fulgur_logs", "version_0", "checkpoints"))).toBe(false);
  });

  it("--dry-run prints the resolved config without training", async () => {
    const cfg = writeJson(join(dir, "dry.json"), tinyConfig({ trainer: { defaultRootDir: "dry-run" } }));
    const r = await cli("fit", "-c", cfg, "--dry-run", "--set", "model.config=tiny", "--set", "data.seqLen=32");
    expect(r.code).toBe(0);
    const resolved = JSON.parse(r.out);
    expect(resolved.model.config).toMatchObject({ dModel: 64, nLayers: 2, nHeads: 4, seqLen: 64, vocabSize: 256 });
    expect(resolved.data).toEqual({ paths: [join(dir, "data")], seqLen: 32, batchSize: 4, shuffle: false, valFraction: 0 });
    expect(resolved.trainer.defaultRootDir).toBe(join(dir, "dry-run"));
    expect(existsSync(join(dir, "dry-run"))).toBe(false);
  });
});

describe("fulgur fit: resuming and failing", () => {
  it("resumes from ckptPath (relative to the config file) and trains up to maxSteps", async () => {
    const first = await cli("fit", "-c", writeJson(join(dir, "first.json"), tinyConfig({ trainer: { maxSteps: 3, enableProgressBar: false, defaultRootDir: "first", accelerator: "cpu" } })));
    expect(first.code).toBe(0);
    expect(first.out).toMatch(/^fit done: 3 steps/);
    const ckpt = join("first", "fulgur_logs", "version_0", "checkpoints", "last.safetensors");
    const cfg = tinyConfig({ trainer: { maxSteps: 5, enableProgressBar: false, defaultRootDir: "second", accelerator: "cpu" }, ckptPath: ckpt });
    const second = await cli("fit", "-c", writeJson(join(dir, "second.json"), cfg));
    expect(second.code).toBe(0);
    expect(second.out).toMatch(/^fit done: 5 steps/);
    const header = await readSafetensorsHeader(/checkpoint: (.*)$/m.exec(second.out)![1]);
    expect(JSON.parse(header.metadata.fulgur).loop.globalStep).toBe(5);
  });

  it("shows a training failure's message without a stack, exit code 1; FULGUR_DEBUG=1 adds the stack", async () => {
    const small = join(dir, "small");
    mkdirSync(small, { recursive: true });
    writeFileSync(join(small, "a.txt"), "too short");
    const cfg = writeJson(join(dir, "small.json"), tinyConfig({ data: { paths: ["small"], batchSize: 4 } }));
    const r = await cli("fit", "-c", cfg);
    expect(r.code).toBe(1);
    expect(r.err.trim()).toBe(`fulgur: TextDataset: 1 file(s) under ${small} hold 9 bytes; need at least seqLen + 1 = 17`);
    process.env.FULGUR_DEBUG = "1";
    try {
      const debug = await cli("fit", "-c", cfg);
      expect(debug.code).toBe(1);
      expect(debug.err).toMatch(/TextDataset: 1 file\(s\)[^\n]*\n\s+at /);
    } finally {
      delete process.env.FULGUR_DEBUG;
    }
  });
});

describe("fulgur fit: config errors before training", () => {
  async function problems(config: unknown, ...extra: string[]): Promise<{ code: number; lines: string[]; err: string }> {
    const cfg = writeJson(join(dir, `bad-${Math.random().toString(36).slice(2)}.json`), config);
    const r = await cli("fit", "--config", cfg, ...extra);
    const lines = r.err.split("\n").filter((l) => l.startsWith("  - ")).map((l) => l.slice(4));
    return { code: r.code, lines, err: r.err };
  }

  it("reports wrong types with field, value and what is allowed", async () => {
    const base = tinyConfig();
    const r = await problems({
      ...base,
      model: { config: { dModel: 32, nLayers: "one", nHeads: 2, seqLen: 16 }, lr: "fast" },
      data: { paths: ["data", 3], batchSize: 0 },
    });
    expect(r.code).toBe(2);
    expect(r.lines).toEqual([
      'model.config.nLayers: got "one"; expected a positive integer (transformer blocks)',
      'model.lr: got "fast"; expected a positive number (the peak learning rate, default 3e-3)',
      "data.paths[1]: got 3; expected a path to a text file or a directory of text files",
      "data.batchSize: got 0; expected a positive integer (samples per batch)",
    ]);
    expect(r.err).toMatch(/4 problems in the config/);
  });

  it("reports unknown keys with the keys that are allowed", async () => {
    const base = tinyConfig() as { data: object };
    const r = await problems({ ...base, data: { ...base.data, shufle: true }, epochs: 3 });
    expect(r.code).toBe(2);
    expect(r.lines).toEqual([
      "epochs: unknown key (value 3); the top level allows model, data, trainer, ckptPath",
      "data.shufle: unknown key (value true); data allows paths, seqLen, batchSize, shuffle, valFraction",
    ]);
  });

  it("reports missing fields and data paths that do not exist", async () => {
    const r = await problems({ model: { config: "tiny" }, data: { paths: ["data", "missing-dir"] } });
    expect(r.code).toBe(2);
    expect(r.lines).toEqual([
      "data.batchSize: missing; expected a positive integer (samples per batch)",
      `data.paths[1]: got "missing-dir"; expected an existing file or directory (${join(dir, "missing-dir")} does not exist)`,
    ]);
    const none = await problems({ model: { config: "tiny" } });
    expect(none.lines).toEqual(["data: missing; expected an object: { paths, batchSize, seqLen?, shuffle?, valFraction? }"]);
  });

  it("reports model and Trainer problems the schema cannot see", async () => {
    const r = await problems(
      tinyConfig({
        model: { config: { dModel: 30, nLayers: 1, nHeads: 4, seqLen: 16 } },
        trainer: { maxSteps: 5, precision: "8-bit", maxEpoch: 1 },
      }),
    );
    expect(r.code).toBe(2);
    expect(r.lines[0]).toBe('model.config: got {"dModel":30,"nLayers":1,"nHeads":4,"seqLen":16}; dModel (30) must be divisible by nHeads (4)');
    expect(r.lines[1]).toMatch(/^trainer\.precision: got "8-bit"; .*bf16-mixed/);
    expect(r.lines[2]).toMatch(/^trainer: unknown option\(s\) "maxEpoch"; allowed: .*maxEpochs/);
  });

  it("reports a bad --set value through the field it sets", async () => {
    const cfg = writeJson(join(dir, "ok.json"), tinyConfig());
    const r = await cli("fit", "-c", cfg, "--set", "model.config=huge", "--set", "data.shuffle=1", "--set", "data.seqLen=64");
    expect(r.code).toBe(2);
    const lines = r.err.split("\n").filter((l) => l.startsWith("  - ")).map((l) => l.slice(4));
    expect(lines).toEqual([
      'model.config: got "huge"; expected one of "tiny", "small", "1b" (or an object { dModel, nLayers, nHeads, seqLen, ... })',
      "data.shuffle: got 1; expected true or false (shuffle the training samples every epoch, default true)",
    ]);
    const long = await cli("fit", "-c", cfg, "--set", "data.seqLen=64");
    expect(long.err).toContain("data.seqLen: got 64; expected at most the model's seqLen (16)");
  });

  it("rejects malformed --set, unknown extensions and unreadable files as usage errors", async () => {
    const cfg = writeJson(join(dir, "ok2.json"), tinyConfig());
    const noEq = await cli("fit", "-c", cfg, "--set", "trainer.maxSteps");
    expect(noEq.code).toBe(2);
    expect(noEq.err.trim()).toBe(
      "error: option '--set <key=value>' argument 'trainer.maxSteps' is invalid. expected key=value with a dotted key, e.g. trainer.maxSteps=10 or model.lr=1e-3",
    );
    const ext = await cli("fit", "-c", join(dir, "cfg.toml"));
    expect(ext.err.trim()).toBe(`error: option '--config <file>' argument '${join(dir, "cfg.toml")}' is invalid. expected a .yaml, .yml or .json file`);
    const missing = await cli("fit", "-c", join(dir, "nope.yaml"));
    expect(missing.code).toBe(2);
    expect(missing.err).toContain(`does not exist`);
    writeFileSync(join(dir, "broken.yaml"), "model: [unclosed\n");
    const broken = await cli("fit", "-c", join(dir, "broken.yaml"));
    expect(broken.code).toBe(2);
    expect(broken.err).toMatch(/broken\.yaml: not valid YAML/);
    const none = await cli("fit");
    expect(none.code).toBe(2);
    expect(none.err).toContain("error: required option '-c, --config <file>' not specified");
  });

  it("never starts training when the config is bad", async () => {
    const r = await problems(tinyConfig({ trainer: { maxSteps: -5, defaultRootDir: "never" } }));
    expect(r.code).toBe(2);
    expect(r.lines).toEqual(["trainer.maxSteps: got -5; expected a value >= -1"]);
    expect(readdirSync(dir)).not.toContain("never");
  });
});

describe("--set parsing", () => {
  it("types numbers, booleans, null and JSON; keeps other text", () => {
    expect(parseOverrideValue("10")).toBe(10);
    expect(parseOverrideValue("1e-3")).toBe(0.001);
    expect(parseOverrideValue("-2.5")).toBe(-2.5);
    expect(parseOverrideValue("true")).toBe(true);
    expect(parseOverrideValue("false")).toBe(false);
    expect(parseOverrideValue("null")).toBe(null);
    expect(parseOverrideValue('["a","b"]')).toEqual(["a", "b"]);
    expect(parseOverrideValue("bf16-mixed")).toBe("bf16-mixed");
    expect(parseOverrideValue("16-mixed")).toBe("16-mixed");
    expect(parseOverrideValue("[not json")).toBe("[not json");
    expect(parseOverride("a.b=x=y")).toEqual({ key: "a.b", value: "x=y" });
  });

  it("creates intermediate objects and refuses to descend into a scalar", () => {
    expect(applyOverrides({ model: { lr: 1 } }, [{ key: "trainer.maxSteps", value: 3 }, { key: "model.lr", value: 2 }])).toEqual({
      model: { lr: 2 },
      trainer: { maxSteps: 3 },
    });
    expect(() => applyOverrides({ model: { lr: 1 } }, [{ key: "model.lr.x", value: 1 }])).toThrow(/model\.lr is 1, not an object, so it has no field x/);
  });
});
