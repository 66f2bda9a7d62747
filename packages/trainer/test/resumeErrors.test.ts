/**
 * Resuming from a file that cannot continue a run fails at the start with a sentence naming the
 * file and what is missing, never with a TypeError in the middle of training: a checkpoint whose
 * optimizer tensors were stripped, one with no optimizer state, a weights-only file, a directory.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { Checkpoint } from "@fulgur/core";
import { FullCheckpointIO } from "@fulgur/checkpoint-io";
import { AdamW, flattenOptimizerState } from "@fulgur/nn";
import { loadNamedOptimizerState, namedOptimizerState } from "@fulgur/strategy-kit";
import { type Tensor, tensor } from "@fulgur/tensor";
import { OPTIMIZER_PREFIX, buildCheckpoint, loopPositionOf, optimizerStateOf } from "../src/checkpointing";

const dir = mkdtempSync(join(tmpdir(), "fulgur-resume-errors-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A parameter and an AdamW that has stepped once, so it has state tensors (exp_avg, exp_avg_sq). */
function stepped(): { p: Tensor; opt: AdamW } {
  const p = tensor([1, 2, 3], { requiresGrad: true });
  const opt = new AdamW([p], { lr: 0.1 });
  p.grad = tensor([0.1, 0.2, 0.3]);
  opt.step();
  return { p, opt };
}

/** The module's one parameter is called "w". */
const nameOf = () => "w";

/** A Trainer checkpoint, its optimizer state by parameter name as the Trainer saves it, or in the index-keyed format of older files. */
function trainerCheckpoint(format: "named" | "indexed" = "named"): Checkpoint {
  const { p, opt } = stepped();
  const flat = flattenOptimizerState(opt.stateDict());
  const optimizerState = format === "named" ? namedOptimizerState(opt, nameOf) : { tensors: flat.tensors, meta: flat.meta as never };
  return buildCheckpoint({ moduleState: { w: p }, optimizerState, scheduler: null, position: { epoch: 0, globalStep: 1, batchInEpoch: 1 }, extra: {} });
}

/** What a resume does with the optimizer (Trainer.restore without a strategy of its own), then one more step. */
function resumeAndStep(checkpoint: Checkpoint, path: string): void {
  const { opt } = stepped();
  loadNamedOptimizerState(opt, nameOf, optimizerStateOf(checkpoint, path));
  opt.step();
}

describe("resuming needs the optimizer state", () => {
  it("a checkpoint whose optimizer tensors were stripped is refused by name, not a TypeError at the next step", () => {
    const ckpt = trainerCheckpoint();
    for (const k of Object.keys(ckpt.tensors)) if (k.startsWith(OPTIMIZER_PREFIX)) delete ckpt.tensors[k];
    let err: unknown;
    try {
      resumeAndStep(ckpt, "stripped.safetensors");
    } catch (e) {
      err = e;
    }
    expect(err).not.toBeInstanceOf(TypeError);
    expect((err as Error).message).toBe(
      "checkpoint stripped.safetensors holds optimizer state without its tensors (missing: optimizer.state.w.exp_avg, optimizer.state.w.exp_avg_sq); " +
        "the file was stripped of them (e.g. converted to weights only), so it cannot resume training. " +
        "Resume from a checkpoint saved by Trainer.fit, or start from these weights: load moduleStateOf(checkpoint) in configureModel and fit without ckptPath",
    );
  });

  it("the same for a checkpoint written before the tensor names were recorded (index-keyed state)", () => {
    const ckpt = trainerCheckpoint("indexed");
    delete ckpt.meta.optimizer_tensors;
    for (const k of Object.keys(ckpt.tensors)) if (k.startsWith(OPTIMIZER_PREFIX)) delete ckpt.tensors[k];
    expect(() => resumeAndStep(ckpt, "old.safetensors")).toThrow(
      /^checkpoint old\.safetensors holds optimizer state without its tensors \(state for 1 parameter, no optimizer\.\* tensor\); the file was stripped/,
    );
  });

  it("a complete checkpoint resumes, also after a round trip through a file", async () => {
    const path = join(dir, "ok.safetensors");
    await new FullCheckpointIO().save(trainerCheckpoint(), path);
    const back = await new FullCheckpointIO().load(path);
    expect(() => resumeAndStep(back, path)).not.toThrow();
  });

  it("a checkpoint without optimizer state says what it holds and what to do", () => {
    const { p } = stepped();
    const ckpt = buildCheckpoint({ moduleState: { w: p }, optimizerState: null, scheduler: null, position: { epoch: 0, globalStep: 1, batchInEpoch: 1 }, extra: {} });
    expect(() => optimizerStateOf(ckpt, "noopt.safetensors")).toThrow(
      "checkpoint noopt.safetensors has no optimizer state (it holds 1 tensor, model weights only), so it cannot resume training. " +
        "Resume from a checkpoint saved by Trainer.fit, or start from these weights: load moduleStateOf(checkpoint) in configureModel and fit without ckptPath",
    );
  });

  it("a weights-only file (no Trainer state at all) is named as such", () => {
    const ckpt: Checkpoint = { tensors: { "model.w": tensor([1]) }, meta: {} };
    expect(() => loopPositionOf(ckpt, "weights.safetensors")).toThrow(
      "checkpoint weights.safetensors holds weights only (no trainer_checkpoint_version, no loop position), so it cannot resume training. " +
        "Resume from a checkpoint saved by Trainer.fit, or start from these weights: load moduleStateOf(checkpoint) in configureModel and fit without ckptPath",
    );
    expect(() => loopPositionOf({ tensors: {}, meta: { trainer_checkpoint_version: 7 } }, "new.safetensors")).toThrow(
      "checkpoint new.safetensors: trainer checkpoint version 7 is not supported (this Trainer reads version 1)",
    );
  });

  it("a directory as ckptPath names the checkpoints inside it", async () => {
    const run = join(dir, "run");
    await new FullCheckpointIO().save(trainerCheckpoint(), join(run, "last.safetensors"));
    await expect(new FullCheckpointIO().load(run)).rejects.toThrow(
      `${run}: is a directory, not a full checkpoint (one .safetensors file); pass one of the checkpoints in it: last.safetensors`,
    );
  });
});

describe("through the Trainer", () => {
  it("fit with a directory as ckptPath names the checkpoints inside it", async () => {
    const { ModelCheckpoint, Trainer } = await import("../src");
    const { GPTLanguageModel } = await import("../src/demos");
    const { TINY, loader } = await import("./helpers");
    const run = join(dir, "trained");
    const quiet = { enableProgressBar: false, logger: false } as const;
    await new Trainer({ ...quiet, maxSteps: 2, callbacks: [new ModelCheckpoint({ dirpath: run, saveLast: true, saveTopK: 0 })] }).fit(
      new GPTLanguageModel({ config: TINY }),
      loader(),
    );
    const resumed = new Trainer({ ...quiet, maxSteps: 4, enableCheckpointing: false });
    await expect(resumed.fit(new GPTLanguageModel({ config: TINY }), loader(), null, { ckptPath: run })).rejects.toThrow(
      `${run}: is a directory, not a full checkpoint (one .safetensors file); pass one of the checkpoints in it: last.safetensors`,
    );
  });
});

describe("weights-only saves (Lightning's weights_only)", () => {
  it("ModelCheckpoint saveWeightsOnly writes the module's tensors as the full save does, without optimizer state or scheduler; resuming from it is refused by name", async () => {
    const { ModelCheckpoint, Trainer } = await import("../src");
    const { GPTLanguageModel } = await import("../src/demos");
    const { TINY, loader } = await import("./helpers");
    const { readSafetensors } = await import("@fulgur/checkpoint-io");
    const run = join(dir, "weights-only");
    const quiet = { enableProgressBar: false, logger: false } as const;
    const hp = { config: TINY, lr: 1e-2, warmupSteps: 1, totalSteps: 4 };
    const weights = new ModelCheckpoint({ dirpath: run, filename: "weights", everyNTrainSteps: 2, saveWeightsOnly: true });
    const full = new ModelCheckpoint({ dirpath: run, filename: "full", everyNTrainSteps: 2 });
    await new Trainer({ ...quiet, maxSteps: 2, callbacks: [weights, full] }).fit(new GPTLanguageModel(hp), loader());
    const [w, f] = await Promise.all([readSafetensors(join(run, "weights.safetensors")), readSafetensors(join(run, "full.safetensors"))]);
    const modelNames = Object.keys(f.tensors).filter((n) => !n.startsWith(OPTIMIZER_PREFIX));
    expect(Object.keys(f.tensors).length).toBeGreaterThan(modelNames.length);
    expect(Object.keys(w.tensors).sort()).toEqual(modelNames.sort());
    for (const n of modelNames) expect(Buffer.from(w.tensors[n].data).equals(Buffer.from(f.tensors[n].data)), n).toBe(true);
    const meta = JSON.parse(w.metadata.fulgur);
    expect(meta.optimizer).toBeUndefined();
    expect(meta.scheduler).toBeUndefined();
    expect(JSON.parse(f.metadata.fulgur).scheduler).toBeDefined();

    const path = join(run, "weights.safetensors");
    const resumed = new Trainer({ ...quiet, maxSteps: 4, enableCheckpointing: false });
    await expect(resumed.fit(new GPTLanguageModel(hp), loader(), null, { ckptPath: path })).rejects.toThrow(
      `checkpoint ${path} has no optimizer state (it holds ${modelNames.length} tensors, model weights only), so it cannot resume training`,
    );
  });

  it("a weightsOnly that is not a boolean is refused, naming it", async () => {
    const { ModelCheckpoint } = await import("../src");
    expect(() => new ModelCheckpoint({ saveWeightsOnly: "yes" as never })).toThrow('ModelCheckpoint saveWeightsOnly: got "yes"; expected true or false');
  });
});
