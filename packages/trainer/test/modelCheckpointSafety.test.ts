/**
 * ModelCheckpoint never harms files it did not write (a checkpoint is data, DESIGN.md decision 9):
 * paths in a resumed checkpoint drive no deletion, only names re-validated by listing its own
 * directory; top-k without a monitor keeps the newest; a later step's checkpoint is not silently
 * replaced; unfinished writes are cleaned on start and ignored everywhere.
 *
 * The Trainer is stood in for by the few members the callback uses, writing real checkpoint files,
 * so these tests exercise the callback's file handling alone.
 */
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { FullCheckpointIO, temporaryPathFor } from "@fulgur/checkpoint-io";
import { fromHost } from "@fulgur/tensor";
import { ModelCheckpoint, type ModelCheckpointOptions } from "../src/callbacks/modelCheckpoint";
import type { Trainer } from "../src/trainer";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "fulgur-mc-safety-"));
  dirs.push(d);
  return d;
}

const io = new FullCheckpointIO();

/** What ModelCheckpoint uses of a Trainer; saves write real full checkpoints carrying the loop step. */
class StandIn {
  globalStep = 0;
  currentEpoch = 0;
  isGlobalZero = true;
  callbackMetrics: Record<string, number> = {};
  constructor(
    readonly logDir: string,
    readonly callbacks: ModelCheckpoint[] = [],
  ) {}
  async saveCheckpoint(path: string): Promise<void> {
    const callbacks: Record<string, unknown> = {};
    for (const c of this.callbacks) callbacks[c.stateKey] = c.stateDict();
    await writeCheckpoint(path, this.globalStep, { callbacks });
  }
  async removeCheckpoint(path: string): Promise<void> {
    if (this.isGlobalZero) await io.remove(path);
  }
  /** Runs `steps` optimizer steps, each logging `score(step)` and saving. */
  async steps(from: number, to: number, score: (step: number) => number = () => 0): Promise<void> {
    for (let s = from; s <= to; s++) {
      this.globalStep = s;
      this.callbackMetrics.val_loss = score(s);
      for (const c of this.callbacks) await c.onTrainBatchEnd(this as unknown as Trainer);
    }
  }
}

async function writeCheckpoint(path: string, step: number, meta: Record<string, unknown> = {}): Promise<void> {
  const w = fromHost(new Float32Array([step]), [1], "float32");
  await io.save({ tensors: { "state_dict.w": w }, meta: { trainer_checkpoint_version: 1, loop: { epoch: 0, globalStep: step, batchInEpoch: step }, ...meta } }, path);
  w.dispose();
}

function setup(dir: string, options: ModelCheckpointOptions = {}): { trainer: StandIn; ckpt: ModelCheckpoint } {
  const ckpt = new ModelCheckpoint({ dirpath: dir, everyNTrainSteps: 1, ...options });
  const trainer = new StandIn(dir, [ckpt]);
  return { trainer, ckpt };
}

const asTrainer = (t: StandIn) => t as unknown as Trainer;
const files = (dir: string) => readdirSync(dir).sort();

describe("resuming never deletes what the callback did not write", () => {
  it("resuming a copy of a run leaves the original run's checkpoints alone", async () => {
    const original = join(tempDir(), "run");
    const first = setup(original, { monitor: "val_loss", saveTopK: 1 });
    await first.trainer.steps(1, 3, (s) => 10 - s);
    expect(files(original)).toEqual(["epoch=0-step=3.safetensors"]);
    const state = first.ckpt.stateDict();

    const copy = join(tempDir(), "copy");
    cpSync(original, copy, { recursive: true });
    const resumed = setup(copy, { monitor: "val_loss", saveTopK: 1 });
    resumed.ckpt.loadStateDict(JSON.parse(JSON.stringify(state)));
    await resumed.ckpt.onFitStart(asTrainer(resumed.trainer));
    await resumed.trainer.steps(4, 5, (s) => 10 - s);

    expect(files(original)).toEqual(["epoch=0-step=3.safetensors"]);
    // In its own directory the resumed run keeps its top 1, the restored file included.
    expect(files(copy)).toEqual(["epoch=0-step=5.safetensors"]);
  });

  it("a crafted checkpoint naming files outside the directory, or files it did not write, deletes nothing", async () => {
    const outside = tempDir();
    const victim = join(outside, "precious.safetensors");
    await writeCheckpoint(victim, 1);
    const dir = join(tempDir(), "run");
    mkdirSync(dir);
    const mine = join(dir, "notes.safetensors");
    await writeCheckpoint(mine, 1);
    const { trainer, ckpt } = setup(dir, { monitor: "val_loss", saveTopK: 1 });
    ckpt.loadStateDict({
      saved: [
        // The former layout: a path.
        { path: victim, score: 1e9, step: 1 },
        // Names that escape the directory or are not the callback's own.
        { name: `../${outside.split("/").pop()}/precious.safetensors`, score: 1e9, step: 1 },
        { name: "notes.safetensors", score: 1e9, step: 1 },
        { name: victim, score: 1e9, step: 1 },
      ],
    });
    await ckpt.onFitStart(asTrainer(trainer));
    await trainer.steps(2, 4, (s) => -s);
    expect(existsSync(victim)).toBe(true);
    expect(existsSync(mine)).toBe(true);
    expect(files(dir)).toEqual(["epoch=0-step=4.safetensors", "notes.safetensors"]);
  });

  it("restored names are re-validated by listing the directory: a vanished file is not reported as best", async () => {
    const dir = join(tempDir(), "run");
    const first = setup(dir, { monitor: "val_loss", saveTopK: 2 });
    await first.trainer.steps(1, 2, (s) => s);
    const state = first.ckpt.stateDict();
    rmSync(join(dir, "epoch=0-step=1.safetensors"));
    const resumed = setup(dir, { monitor: "val_loss", saveTopK: 2 });
    resumed.ckpt.loadStateDict(state);
    await resumed.ckpt.onFitStart(asTrainer(resumed.trainer));
    expect(resumed.ckpt.bestModelPath).toBe(join(dir, "epoch=0-step=2.safetensors"));
    expect(resumed.ckpt.savedPaths).toEqual([join(dir, "epoch=0-step=2.safetensors")]);
    expect(JSON.stringify(resumed.ckpt.stateDict())).not.toContain(dir);
  });
});

describe("what is kept", () => {
  it("saveTopK without a monitor keeps the newest k", async () => {
    const dir = join(tempDir(), "run");
    const { trainer, ckpt } = setup(dir, { saveTopK: 2 });
    await trainer.steps(1, 5);
    expect(files(dir)).toEqual(["epoch=0-step=4.safetensors", "epoch=0-step=5.safetensors"]);
    expect(ckpt.bestModelPath).toBe(join(dir, "epoch=0-step=5.safetensors"));
  });

  it("a name without {step} overwritten at a later step is tracked once, not deleted as an older entry", async () => {
    const dir = join(tempDir(), "run");
    const { trainer } = setup(dir, { saveTopK: 1, filename: "latest" });
    await trainer.steps(1, 3);
    expect(files(dir)).toEqual(["latest.safetensors"]);
    expect((await io.load(join(dir, "latest.safetensors"))).meta.loop).toMatchObject({ globalStep: 3 });
  });
});

describe("a checkpoint of a later step is not silently replaced", () => {
  it("a fresh run refuses at start to overwrite a longer run's last.safetensors", async () => {
    const dir = join(tempDir(), "run");
    await writeCheckpoint(join(dir, "last.safetensors"), 100);
    const { trainer, ckpt } = setup(dir, { saveLast: true, saveTopK: 0 });
    await expect(ckpt.onFitStart(asTrainer(trainer))).rejects.toThrow(
      `ModelCheckpoint: ${join(dir, "last.safetensors")} holds step 100, later than this run's step 0; saving would replace it with an earlier state. ` +
        "Resume from it (fit's ckptPath), save elsewhere (dirpath), or pass overwriteLaterStep: true to replace it",
    );
    // Also when saving, in case the file appeared after the start.
    await expect(trainer.steps(1, 1)).rejects.toThrow(/holds step 100, later than this run's step 1/);
  });

  it("overwriteLaterStep: true replaces it with a warning", async () => {
    const dir = join(tempDir(), "run");
    await writeCheckpoint(join(dir, "last.safetensors"), 100);
    const { trainer, ckpt } = setup(dir, { saveLast: true, saveTopK: 0, overwriteLaterStep: true });
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(w.message);
    process.on("warning", onWarning);
    try {
      await ckpt.onFitStart(asTrainer(trainer));
      await trainer.steps(1, 2);
      await new Promise((r) => setImmediate(r));
    } finally {
      process.off("warning", onWarning);
    }
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/last\.safetensors holds step 100, later than this run's step 0.*overwriteLaterStep: true/);
    expect((await io.load(join(dir, "last.safetensors"))).meta.loop).toMatchObject({ globalStep: 2 });
  });

  it("the same or an earlier step is overwritten without a word (a resumed run)", async () => {
    const dir = join(tempDir(), "run");
    await writeCheckpoint(join(dir, "last.safetensors"), 10);
    const { trainer, ckpt } = setup(dir, { saveLast: true, saveTopK: 0 });
    trainer.globalStep = 10;
    await ckpt.onFitStart(asTrainer(trainer));
    await trainer.steps(11, 11);
    expect((await io.load(join(dir, "last.safetensors"))).meta.loop).toMatchObject({ globalStep: 11 });
  });
});

describe("unfinished writes", () => {
  it("stale temporaries of this callback are removed on start; a live writer's and foreign files are kept", async () => {
    const dir = join(tempDir(), "run");
    mkdirSync(dir);
    // A process that has exited: its pid names a writer that is gone.
    const deadPid = spawnSync(process.execPath, ["-e", ""]).pid;
    expect(Number.isInteger(deadPid) && deadPid > 0).toBe(true);
    const stale = [`last.safetensors.tmp-${deadPid}-0123456789ab`, `epoch=0-step=7.safetensors.tmp-${deadPid}-abcdef012345`];
    const live = temporaryPathFor(join(dir, "epoch=0-step=8.safetensors")).split("/").pop()!;
    const foreign = [`other.bin.tmp-${deadPid}-0123456789ab`, "notes.tmp", `epoch=0-step=9.safetensors.tmp-${deadPid}-xyz`];
    for (const n of [...stale, live, ...foreign]) writeFileSync(join(dir, n), "half-written");
    const { trainer, ckpt } = setup(dir, { saveTopK: 1 });
    await ckpt.onFitStart(asTrainer(trainer));
    expect(files(dir)).toEqual([live, ...foreign].sort());
  });

  it("temporaries are never taken for checkpoints: not restored, not counted, not removed as top-k", async () => {
    const dir = join(tempDir(), "run");
    mkdirSync(dir);
    const tmp = temporaryPathFor(join(dir, "epoch=0-step=1.safetensors"));
    writeFileSync(tmp, "half-written");
    const { trainer, ckpt } = setup(dir, { saveTopK: 1 });
    ckpt.loadStateDict({ saved: [{ name: tmp.split("/").pop(), score: 1, step: 1 }] });
    await ckpt.onFitStart(asTrainer(trainer));
    expect(ckpt.savedPaths).toEqual([]);
    await trainer.steps(2, 3);
    expect(files(dir)).toEqual(["epoch=0-step=3.safetensors", tmp.split("/").pop()!].sort());
  });
});

describe("through the Trainer", () => {
  it("resuming a copied run from the copy's last.safetensors leaves the original untouched", async () => {
    const { Trainer } = await import("../src");
    const { GPTLanguageModel } = await import("../src/demos");
    const { TINY, loader } = await import("./helpers");
    const quiet = { enableProgressBar: false, logger: false, logEveryNSteps: 1 } as const;
    const fit = async (dir: string, maxSteps: number, ckptPath?: string) => {
      const ckpt = new ModelCheckpoint({ dirpath: dir, everyNTrainSteps: 2, saveTopK: 1, saveLast: true });
      await new Trainer({ ...quiet, maxSteps, callbacks: [ckpt] }).fit(new GPTLanguageModel({ config: TINY, lr: 1e-2 }), loader(), null, { ckptPath });
    };
    const original = join(tempDir(), "run");
    await fit(original, 4);
    const before = files(original);
    expect(before).toEqual(["epoch=0-step=4.safetensors", "last.safetensors"]);
    const copy = join(tempDir(), "copy");
    cpSync(original, copy, { recursive: true });
    await fit(copy, 8, join(copy, "last.safetensors"));
    expect(files(original)).toEqual(before);
    expect((await io.load(join(original, "last.safetensors"))).meta.loop).toMatchObject({ globalStep: 4 });
    expect(files(copy)).toEqual(["epoch=0-step=8.safetensors", "last.safetensors"]);
  });
});
