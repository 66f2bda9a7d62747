/**
 * HashedCheckpointIO on its own (sidecar written, verified, refused when changed), registered with
 * DDP as `ddp_hashed` and used by name by a Trainer that resumes from it, given to a Trainer through
 * `plugins`, and the README's example run as a user runs it.
 */
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { KNOWN_STRATEGY_PACKAGES, Registry, type Strategy, StrategyRegistry, assertStrategy } from "@fulgur/core";
import { tensor } from "@fulgur/tensor";
import { DataLoader, TextDataset, Trainer, type TrainerOptionsInput } from "@fulgur/trainer";
import { GPTLanguageModel } from "@fulgur/trainer/demos";
import { CheckpointIntegrityError, HashedCheckpointIO, SIDECAR_FORMAT, sidecarPath } from "../src/index";
import { registerDdpHashed } from "../example/ddpHashed";

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "hashed-io-"));
  dirs.push(d);
  return d;
}

const sha256 = (path: string): string => createHash("sha256").update(readFileSync(path)).digest("hex");

/** Flips one byte near the end of the file: inside the tensor data, past the header. */
function tamper(path: string): void {
  const bytes = readFileSync(path);
  bytes[bytes.length - 3] ^= 0x40;
  writeFileSync(path, bytes);
}

describe("HashedCheckpointIO", () => {
  it("writes a safetensors file and a sidecar with its SHA-256, and loads what it saved", async () => {
    const io = new HashedCheckpointIO();
    const path = join(tempDir(), "ckpt.safetensors");
    await io.save({ tensors: { w: tensor([1, 2, 3]) }, meta: { step: 7 } }, path);
    const sidecar = JSON.parse(readFileSync(sidecarPath(path), "utf8"));
    expect(sidecar).toEqual({ format: SIDECAR_FORMAT, version: 1, file: "ckpt.safetensors", bytes: readFileSync(path).length, sha256: sha256(path) });
    const loaded = await io.load(path);
    expect(loaded.tensors.w.toArray()).toEqual([1, 2, 3]);
    expect(loaded.meta).toEqual({ step: 7 });
    await io.remove(path);
    expect(existsSync(path) || existsSync(sidecarPath(path))).toBe(false);
  });

  it("refuses a file changed after it was saved, naming both checksums", async () => {
    const io = new HashedCheckpointIO();
    const path = join(tempDir(), "ckpt.safetensors");
    await io.save({ tensors: { w: tensor([1, 2, 3]) }, meta: {} }, path);
    const recorded = sha256(path);
    tamper(path);
    const err = await io.load(path).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CheckpointIntegrityError);
    expect((err as Error).message).toBe(
      `${path} does not match its checksum file ${path}.sha256.json: SHA-256 ${sha256(path)} over ${readFileSync(path).length} bytes, ` +
        `recorded ${recorded} over ${readFileSync(path).length} bytes. The checkpoint changed after it was saved; refusing to load it`,
    );
  });

  it("refuses a checkpoint without a sidecar, or with one it does not know", async () => {
    const io = new HashedCheckpointIO();
    const path = join(tempDir(), "ckpt.safetensors");
    await io.save({ tensors: { w: tensor([1]) }, meta: {} }, path);
    const sidecar = readFileSync(sidecarPath(path), "utf8");
    writeFileSync(sidecarPath(path), sidecar.replace('"version": 1', '"version": 2'));
    await expect(io.load(path)).rejects.toThrow(`is format "${SIDECAR_FORMAT}" version 2; this reader knows ${SIDECAR_FORMAT} version 1`);
    rmSync(sidecarPath(path));
    await expect(io.load(path)).rejects.toThrow(`${path} has no checksum file (${path}.sha256.json); refusing to load a checkpoint that cannot be verified`);
  });
});

const text = "a checkpoint with a checksum, verified before it is trusted. ".repeat(40);
const data = () => new DataLoader(TextDataset.fromText(text, { seqLen: 8 }), { batchSize: 4, shuffle: false, dropLast: true });
const model = () => new GPTLanguageModel({ config: { dModel: 16, nLayers: 1, nHeads: 2, seqLen: 8, vocabSize: 256 }, lr: 1e-2 });
const options = (dir: string, extra: TrainerOptionsInput): TrainerOptionsInput => ({
  maxSteps: 3, defaultRootDir: dir, logger: false, enableProgressBar: false, ...extra,
});

describe("ddp_hashed: DDP registered with HashedCheckpointIO", () => {
  registerDdpHashed();

  it("is an entry with its checkpoint IO, package and description", () => {
    const registry = new Registry<Strategy>("strategy", assertStrategy, KNOWN_STRATEGY_PACKAGES);
    registerDdpHashed(registry);
    const entry = registry.get("ddp_hashed");
    expect(entry.checkpointIO).toBeInstanceOf(HashedCheckpointIO);
    expect(entry.package).toBe("fulgur-example-custom-checkpoint-io");
    expect(registry.create("ddp_hashed").name).toBe("ddp_hashed");
    expect(StrategyRegistry.has("ddp_hashed")).toBe(true);
  });

  it("a Trainer fit with it (one process) writes the sidecar, resumes from it, and refuses it once tampered", async () => {
    const dir = tempDir();
    const first = new Trainer(options(dir, { strategy: "ddp_hashed", strategyOptions: { verbose: false } }));
    await first.fit(model(), data());
    expect(first.strategy!.name).toBe("ddp_hashed");
    expect(first.worldSize).toBe(1);
    expect(first.checkpointIO.name).toBe("hashed");
    const last = join(first.checkpointDir, "last.safetensors");
    expect(JSON.parse(readFileSync(sidecarPath(last), "utf8")).sha256).toBe(sha256(last));

    const resumed = new Trainer(options(dir, { strategy: "ddp_hashed", strategyOptions: { verbose: false }, maxSteps: 5, enableCheckpointing: false }));
    await resumed.fit(model(), data(), null, { ckptPath: last });
    expect(resumed.startStep).toBe(3);
    expect(resumed.globalStep).toBe(5);

    tamper(last);
    const refused = new Trainer(options(dir, { strategy: "ddp_hashed", strategyOptions: { verbose: false }, maxSteps: 5, enableCheckpointing: false }));
    await expect(refused.fit(model(), data(), null, { ckptPath: last })).rejects.toThrow(/does not match its checksum file .*; refusing to load it$/);
  });
});

describe("plugins: [new HashedCheckpointIO()]", () => {
  it("is the checkpoint IO of the Trainer and of the strategy, and writes the sidecar", async () => {
    const plugin = new HashedCheckpointIO();
    const trainer = new Trainer(options(tempDir(), { plugins: [plugin] }));
    await trainer.fit(model(), data());
    expect(trainer.strategy!.name).toBe("single_device");
    expect(trainer.checkpointIO).toBe(plugin);
    expect((trainer.strategy as unknown as { checkpointIO: unknown }).checkpointIO).toBe(plugin);
    const last = join(trainer.checkpointDir, "last.safetensors");
    expect(JSON.parse(readFileSync(sidecarPath(last), "utf8")).sha256).toBe(sha256(last));
  });
});

describe("the README example", () => {
  it("trains with ddp_hashed and resumes from the verified checkpoint", async () => {
    const here = dirname(fileURLToPath(import.meta.url));
    const tsx = join(dirname(createRequire(import.meta.url).resolve("tsx/package.json")), "dist", "cli.mjs");
    const dir = tempDir();
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [tsx, join(here, "..", "example", "train.ts"), dir], {
      env: Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(RANK|WORLD_SIZE|LOCAL_RANK|MASTER_ADDR|MASTER_PORT)$/.test(k))),
    });
    expect(stderr).toBe("");
    expect(stdout).toMatch(/^step 4: loss \d\.\d{3}; saved .*last\.safetensors and .*last\.safetensors\.sha256\.json \(hashed\)\n/);
    expect(stdout).toMatch(/\nresumed from step 4 \(checksum verified\) to step 8: loss \d\.\d{3}\n$/);
  });
});
