/**
 * ZeRO jobs of 2 and 3 processes on loopback, started as a user starts them (the fixture asks the
 * Trainer for `devices: N`, which relaunches the script). Held to DESIGN.md decision 8: stages 0 to
 * 3, with and without CPU offload and from a config file, give the per-step losses of one process
 * on the same global batch, over 20 steps with accumulation, clipping, a no-decay group and a
 * schedule; sharded stages hold about 1/N of the optimizer state; a ZeRO checkpoint, streamed one
 * unit at a time, resumes in FSDP, DDP, single_device and ZeRO at another world size; what cannot
 * run is refused before any rank starts. The fixture imports the BUILT packages (build them first: `npx tsup`).
 */
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import type { MemoryEstimate, MemoryEstimateInput } from "@fulgur/core";
import { GPT, Module } from "@fulgur/nn";
import { withDevice } from "@fulgur/tensor";
import { afterAll, describe, expect, it } from "vitest";
import { DeepSpeedStrategy } from "../src/index";

const FIXTURES = fileURLToPath(new URL("./fixtures/", import.meta.url));
const STEPS = 20;
const ACCUMULATE = 2;
/** Samples per optimizer step; 2 and 3 ranks divide it with the accumulation. */
const GLOBAL_BATCH = 24;
const TOLERANCE = 1e-5;
/** Variables a launcher sets, and Fulgur's own: each job gets only what the test gives it. */
const INHERITED = /^(RANK|WORLD_SIZE|LOCAL_RANK|LOCAL_WORLD_SIZE|NODE_RANK|GROUP_RANK|MASTER_ADDR|MASTER_PORT|SLURM_.*|FULGUR_.*)$/;
const baseEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !INHERITED.test(k)));
const execFileAsync = promisify(execFile);

const scratch = mkdtempSync(join(tmpdir(), "fulgur-zero-"));
let jobs = 0;
const timings: string[] = [];
afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
  console.log(`zero multi-process timings:\n  ${timings.join("\n  ")}`);
});

interface JobSpec {
  readonly strategy: string;
  readonly world: number;
  readonly options?: object;
  readonly steps?: number;
  /** Extra fixture flags (--save, --resume, --clip). */
  readonly flags?: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
}

interface Outcome {
  readonly code: number;
  readonly stdout: string;
  /** Standard error less the Trainer's note that more CPU processes than cores were asked for. */
  readonly stderr: string;
  readonly out: string;
}

async function launch(spec: JobSpec): Promise<Outcome> {
  const out = join(scratch, `job${++jobs}`);
  const args = [
    join(FIXTURES, "train.mjs"),
    ...["--out", out, "--strategy", spec.strategy, "--devices", String(spec.world), "--steps", String(spec.steps ?? STEPS)],
    ...["--batch", String(GLOBAL_BATCH / spec.world / ACCUMULATE), "--accumulate", String(ACCUMULATE), "--options", JSON.stringify(spec.options ?? {})],
    ...(spec.flags ?? []),
  ];
  const began = performance.now();
  const settled = await execFileAsync(process.execPath, args, { env: { ...baseEnv, ...spec.env }, timeout: 120_000, maxBuffer: 1 << 24 }).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (err: { code?: number; stdout?: string; stderr?: string }) => ({ code: typeof err.code === "number" ? err.code : -1, stdout: err.stdout ?? "", stderr: err.stderr ?? "" }),
  );
  timings.push(`${spec.strategy} ×${spec.world} ${JSON.stringify(spec.options ?? {})} ${(spec.flags ?? []).join(" ")}: ${Math.round(performance.now() - began)} ms`);
  const stderr = settled.stderr.replace(/^fulgur: devices: \d+ on the CPU accelerator starts .*\n/m, "");
  return { ...settled, stderr, out };
}

interface RankResult {
  rank: number;
  losses: number[];
  stateBytes: number;
  /** Each step's highest tensor memory above what was live before the Trainer started. */
  stepPeaks: number[];
  estimate: { device: number; host: number; where: string | null };
  /** Tensor bytes the save added at its highest (null without --save). */
  savePeak: number | null;
  threadedSteps: number;
  /** Elements the optimizer steps updated through the device (offloadStepShare). */
  streamedElements: number;
  /** Units updated beside backward (offloadStepInBackward). */
  besideUnits: number;
  /** ZeRO: each unit's [name, state] between the first forward and its backward. */
  unitsAfterForward: [string, string][] | null;
  swapFiles: { name: string; bytes: number }[];
  /** ZeRO only: the batch sizes trained with, where each unit's state lives, the engine's bytes after step 1. */
  zero: ZeroFacts | null;
}

interface ZeroFacts {
  batchSizes: { train_batch_size: number; train_micro_batch_size_per_gpu: number; gradient_accumulation_steps: number } | null;
  placement: { name: string; parameters: string; optimizerState: string }[];
  held: { device: number; host: number };
  /** Each unit's compute dtype (mixedPrecision's paramDtype, else the master's). */
  computeDtypes: string[];
}

interface Trained {
  /** Per step, the mean of the ranks' losses (their batches are the same size). */
  readonly losses: number[];
  /** Optimizer-state bytes each rank held after the first step. */
  readonly stateBytes: number[];
  /** Tensor bytes each rank's save added at its highest (null without --save). */
  readonly savePeaks: (number | null)[];
  /** CPU optimizer steps each rank ran on worker threads. */
  readonly threadedSteps: number[];
  /** Elements each rank's optimizer steps updated through the device (offloadStepShare). */
  readonly streamedElements: number[];
  /** Units each rank updated beside backward (offloadStepInBackward). */
  readonly besideUnits: number[];
  /** ZeRO: each rank's units' [name, state] between the first forward and its backward. */
  readonly unitsAfterForward: ([string, string][] | null)[];
  /** The files under the NVMe directory each rank saw after step 1 (with --nvme-dir). */
  readonly swapFiles: { name: string; bytes: number }[][];
  readonly zero: (ZeroFacts | null)[];
  readonly stdout: string;
  readonly stderr: string;
}

async function train(spec: JobSpec, allowStderr = false): Promise<Trained> {
  const job = await launch(spec);
  expect(job.code, job.stderr).toBe(0);
  if (!allowStderr) expect(job.stderr).toBe("");
  const ranks = Array.from({ length: spec.world }, (_, r) => JSON.parse(readFileSync(join(job.out, `result-rank${r}.json`), "utf8")) as RankResult);
  // The plan's promise (issue 15): the estimate is within 10% of the measured step peak (on the CPU
  // accelerator device and host are the same memory, so an offloaded job's two figures add), for
  // every job: a resumed one peaks as a fresh one does, and NVMe offload's state is counted only
  // where the step reads it in.
  for (const r of ranks) {
    const measured = r.stepPeaks.at(-1)!;
    const estimated = r.estimate.device + r.estimate.host;
    expect(Math.abs(estimated / measured - 1), `rank ${r.rank}: estimated ${estimated} bytes (peak: ${r.estimate.where}), measured ${measured}`).toBeLessThan(0.1);
  }
  const losses = ranks[0].losses.map((_, step) => ranks.reduce((sum, r) => sum + r.losses[step], 0) / spec.world);
  return { losses, stateBytes: ranks.map((r) => r.stateBytes), savePeaks: ranks.map((r) => r.savePeak), threadedSteps: ranks.map((r) => r.threadedSteps), streamedElements: ranks.map((r) => r.streamedElements), besideUnits: ranks.map((r) => r.besideUnits), unitsAfterForward: ranks.map((r) => r.unitsAfterForward), swapFiles: ranks.map((r) => r.swapFiles), zero: ranks.map((r) => r.zero), stdout: job.stdout, stderr: job.stderr };
}

function expectLosses(actual: readonly number[], expected: readonly number[]): void {
  expect(actual.length).toBe(expected.length);
  const worst = Math.max(...actual.map((l, i) => Math.abs(l - expected[i])));
  expect(worst, `largest difference per step: ${worst}\n${actual.join(", ")}\n${expected.join(", ")}`).toBeLessThan(TOLERANCE);
}

let single: Promise<Trained> | null = null;
/** One process on the whole global batch: what every job must reproduce. */
function reference(): Promise<Trained> {
  single ??= train({ strategy: "single_device", world: 1 }).then((r) => {
    expect(r.losses[STEPS - 1]).toBeLessThan(r.losses[0] - 1);
    return r;
  });
  return single;
}

describe("every stage equals one process (DESIGN.md decision 8)", () => {
  const matrix: { strategy: string; world: number; options?: object; stage: number; offload?: true }[] = [
    { strategy: "deepspeed_stage_1", world: 2, stage: 1 },
    { strategy: "zero1", world: 3, stage: 1 },
    { strategy: "zero2", world: 2, stage: 2 },
    { strategy: "deepspeed_stage_2", world: 3, stage: 2 },
    { strategy: "deepspeed_stage_3", world: 2, stage: 3 },
    { strategy: "deepspeed_stage_3", world: 3, stage: 3 },
    { strategy: "deepspeed_stage_1_offload", world: 2, stage: 1, offload: true },
    { strategy: "deepspeed_stage_2_offload", world: 2, stage: 2, offload: true },
    { strategy: "deepspeed_stage_3_offload", world: 3, stage: 3, offload: true },
    { strategy: "deepspeed", world: 2, options: { stage: 0 }, stage: 0 },
  ];
  for (const c of matrix) {
    it(`${c.strategy} ${c.options ? JSON.stringify(c.options) : ""} at world ${c.world}`, async () => {
      const ref = await reference();
      // Offloaded steps run on two CPU optimizer threads (ZeRO-Offload's CPU Adam), bit-identical to one.
      const flags = c.offload ? ["--cpu-threads", "2"] : [];
      const job = await train({ strategy: c.strategy, world: c.world, options: c.options, flags });
      expectLosses(job.losses, ref.losses);
      // Each step's AdamW (one fused call per parameter group) ran on the threads on every rank.
      if (c.offload) for (const n of job.threadedSteps) expect(n).toBe(2 * STEPS);
      expect(job.stdout).toContain(`[rank 0] ${c.strategy}: ZeRO stage ${c.stage}: `);
      expect(job.stdout.includes("offloaded to host memory")).toBe(c.offload === true);
      // Sharded stages hold 1/N of the optimizer state (plus padding); stage 0 holds all of it.
      const share = c.stage === 0 ? 1 : 1 / c.world;
      for (const bytes of job.stateBytes) expect(bytes / ref.stateBytes[0]).toBeCloseTo(share, 2);
    });
  }

  // [Note: the step streamed through the device] in @fulgur/sharding: half of each offloaded step
  // goes through "the device" in pieces of 1,500 elements, more than four at once, and comes back
  // into the host state; on the CPU accelerator a copy stands in for the trip.
  it("stage 3 offload at world 2 with half of each step streamed through the device (offloadStepShare 0.5)", async () => {
    const ref = await reference();
    const env = { FULGUR_STREAMED_STEP_MIN_ELEMENTS: "1000", FULGUR_STREAMED_STEP_PIECE_ELEMENTS: "1500" };
    const job = await train({ strategy: "deepspeed_stage_3_offload", world: 2, options: { offloadStepShare: 0.5 }, env, flags: ["--cpu-threads", "2"] });
    expectLosses(job.losses, ref.losses);
    expect(job.stdout).toMatch(/\[rank 0\] deepspeed_stage_3_offload: .*; \d of 4 unit\(s\) stepped on the device, their gradients kept there \(offloadStepShare\)/);
    // Each rank's parameters of 1,000 elements and more, halved (4,096-element block weights and the
    // root's 4,096-element embedding halves and head): about half of them went through the device
    // at each of the 20 steps; the CPU's threads took the rest.
    for (const [r, n] of job.streamedElements.entries()) {
      expect(n, `rank ${r}`).toBeGreaterThan(0);
      expect(n % STEPS, `rank ${r}`).toBe(0);
    }
    // The CPU's share ran on its threads at each step; on the CPU accelerator each piece's update
    // "on the device" is the CPU backend's too, so there are more threaded calls than groups × steps.
    for (const n of job.threadedSteps) expect(n).toBeGreaterThan(2 * STEPS);
  });

  // Blocks of 12,704 parameters. [Note: units kept from forward to backward] in stages.ts: a reuse
  // distance of 12,704 keeps the last two gathered from forward to backward (the last has nothing
  // after it, the second one block). [Note: persistent units]: a threshold of 13,000 keeps every
  // block gathered from step to step. The memory plan (within 10%, checked for every job) counts them.
  const sharded = (...gathered: boolean[]) => [...gathered.map((g, i) => [`model.blocks.${i}`, g ? "gathered" : "sharded"]), ["", "gathered"]];
  it.each([
    ["stage3_max_reuse_distance", 12_704, "2 unit(s) kept gathered from forward to backward (stage3_max_reuse_distance)", sharded(false, true, true)],
    ["stage3_param_persistence_threshold", 13_000, "3 unit(s) kept gathered from step to step (stage3_param_persistence_threshold)", sharded(true, true, true)],
  ])("stage 3 at world 2 with %s %i: blocks kept gathered, the same losses", async (key, value, line, states) => {
    const ref = await reference();
    const job = await train({ strategy: "deepspeed", world: 2, options: { config: { zero_optimization: { stage: 3, [key]: value } } } });
    expectLosses(job.losses, ref.losses);
    expect(job.stdout).toContain(`[rank 0] deepspeed: ZeRO stage 3: parameters, gradients and optimizer state sharded over 2 rank(s); 4 unit(s) (3 wrapped); prefetch 1; ${line}`);
    // Between the first forward and its backward.
    expect(job.unitsAfterForward).toEqual([states, states]);
  });

  // [Note: the step beside backward] in @fulgur/sharding: with no clipping, each offloaded block is
  // updated by the CPU's threads once its gradients are in, while backward goes on; the schedule's
  // learning rate is checked against each early update at the step, and the first micro-batch of
  // each step (inside noBackwardSync) updates nothing.
  let unclipped: Promise<Trained> | null = null;
  it.each(["deepspeed_stage_3_offload", "deepspeed_stage_2_offload"])("%s at world 2 with units updated beside backward (offloadStepInBackward), no clipping", async (strategy) => {
    unclipped ??= train({ strategy: "single_device", world: 1, flags: ["--clip", "none"] });
    const ref = await unclipped;
    const job = await train({ strategy, world: 2, options: { offloadStepInBackward: true }, flags: ["--cpu-threads", "2", "--clip", "none"] });
    expectLosses(job.losses, ref.losses);
    expect(job.stdout).toContain("offloaded units in host memory updated beside backward when a step follows (offloadStepInBackward)");
    // Three blocks: at each step the two reduced first land before backward ends (stage 2 keeps
    // them gathered on the device; their copies there are gathered again after the step).
    expect(job.besideUnits).toEqual([2 * STEPS, 2 * STEPS]);
  });

  // mixedPrecision: units gathered and computing in bf16 over fp32 master slices, as DeepSpeed's
  // bf16 mode holds the model (on a GPU an offloaded unit then uploads its bf16 host copy); stage 2
  // keeps them gathered in bf16 from step to step.
  let singleBf16: Promise<Trained> | null = null;
  it.each([
    ["deepspeed_stage_3_offload", ["--cpu-threads", "2"]],
    ["deepspeed_stage_2", []],
  ])("%s at world 2 gathering in bf16 (mixedPrecision) under bf16-mixed: the losses of one process under bf16-mixed", async (strategy, extra) => {
    const steps = STEPS / 2;
    singleBf16 ??= train({ strategy: "single_device", world: 1, steps, flags: ["--precision", "bf16-mixed"] });
    const single = await singleBf16;
    const mixedPrecision = { paramDtype: "bfloat16", reduceDtype: "float32" };
    const job = await train({ strategy, world: 2, steps, options: { mixedPrecision }, flags: ["--precision", "bf16-mixed", ...extra] });
    for (const z of job.zero) expect(z!.computeDtypes).toEqual(["bfloat16", "bfloat16", "bfloat16", "bfloat16"]);
    // Within bf16's rounding (5e-3, as the GPU tests hold bf16-mixed), not 1e-5: every parameter,
    // the embeddings and the head included, and every gradient buffer is bf16 here, fp32 under
    // autocast (bf16 rounds to 2^-8 relative; seen: at most 1.8e-3 over the 10 steps). Training
    // goes on: the loss falls as the single process's does.
    expect(job.losses).toHaveLength(steps);
    job.losses.forEach((l, i) => expect(Math.abs(l - single.losses[i]), `step ${i + 1}: ${l} vs ${single.losses[i]}`).toBeLessThan(5e-3));
    expect(job.losses[steps - 1]).toBeLessThan(job.losses[0] - 0.5);
    expect(single.losses[steps - 1]).toBeLessThan(single.losses[0] - 0.5);
  });

  // ZeRO-Infinity: optimizer state and parameter slices in files, read in pieces of about one unit
  // (sub_group_size) while the piece before is updated, in requests of at most 4 KiB (buffer_size)
  // with 3 in flight (buffer_count) on 2 I/O threads; the CPU optimizer on 2 threads.
  for (const world of [2, 3]) {
    it(`stage 3 with optimizer state and parameters offloaded to NVMe (a temporary directory) at world ${world}`, async () => {
      const ref = await reference();
      const nvmePath = join(scratch, `nvme${world}`);
      mkdirSync(nvmePath);
      const config = nvmeConfig(nvmePath);
      const job = await train({ strategy: "deepspeed", world, options: { config }, flags: ["--cpu-threads", "2", "--nvme-dir", nvmePath] });
      expectLosses(job.losses, ref.losses);
      expect(job.stdout).toContain(`[rank 0] deepspeed: ZeRO stage 3: parameters, gradients and optimizer state sharded over ${world} rank(s)`);
      expect(job.stdout).toContain(`slices and optimizer state offloaded to NVMe under ${JSON.stringify(nvmePath)}`);
      // The step went in pieces: more fused AdamW calls (one per piece and group) than groups × steps, all on the threads.
      for (const n of job.threadedSteps) expect(n).toBeGreaterThan(2 * STEPS);
      // During training every rank's directory held its swap file: at least its slices and two
      // AdamW moments (12 bytes per element of its 1/N share), in 4 KiB-aligned regions.
      const dirs = job.swapFiles[0].filter((f) => f.name.startsWith("fulgur-rank") && !f.name.includes("/"));
      expect(dirs.map((d) => d.name.replace(/-[^-]+$/, "")).sort()).toEqual(Array.from({ length: world }, (_, r) => `fulgur-rank${r}`));
      for (const files of job.swapFiles) {
        const swaps = files.filter((f) => f.name.endsWith("/swap.bin"));
        expect(swaps).toHaveLength(world);
        for (const f of swaps) expect(f.bytes).toBeGreaterThanOrEqual((ref.stateBytes[0] / 8) * 12 / world);
      }
      // Gone after teardown.
      expect(readdirSync(nvmePath)).toEqual([]);
    });
  }

  it(`a config from FULGUR_DEEPSPEED_CONFIG_PATH: its stage, clipping and prefetch act, and one warning names what does not`, async () => {
    const ref = await reference();
    const env = { FULGUR_DEEPSPEED_CONFIG_PATH: join(FIXTURES, "configs", "zero3-env.json") };
    // The Trainer clips nothing here: gradient_clipping 0.5 in the config does what gradientClipVal 0.5 did.
    const job = await train({ strategy: "deepspeed", world: 2, env, flags: ["--clip", "none"] }, true);
    expectLosses(job.losses, ref.losses);
    expect(job.stdout).toContain("[rank 0] deepspeed: ZeRO stage 3: parameters, gradients and optimizer state sharded over 2 rank(s); 4 unit(s) (3 wrapped); prefetch 2");
    const warnings = job.stderr.split("\n").filter((l) => l.includes("have no effect in Fulgur"));
    expect(warnings).toEqual([`[rank 0] deepspeed: 2 keys of the config "${env.FULGUR_DEEPSPEED_CONFIG_PATH}" (from FULGUR_DEEPSPEED_CONFIG_PATH) have no effect in Fulgur (the rest is acted on):`]);
    expect(job.stderr).toContain("steps_per_print: logging is the Trainer's (logEveryNSteps)");
    expect(job.stderr).toContain("zero_optimization.sub_group_size: the optimizer steps over whole slices");
  });
});

/** Stage 3 with optimizer state and parameters on NVMe under `nvmePath`, in small pieces and requests (the tiny model's). */
function nvmeConfig(nvmePath: string): object {
  return {
    zero_optimization: {
      stage: 3,
      sub_group_size: 2000,
      offload_optimizer: { device: "nvme", nvme_path: nvmePath, buffer_count: 3 },
      offload_param: { device: "nvme", nvme_path: nvmePath, buffer_count: 3, buffer_size: 4096 },
    },
    aio: { block_size: 4096, thread_count: 2 },
  };
}

describe("the plan at world 1 under bf16 autocast ([Note: a rank alone] in @fulgur/sharding's memory.ts)", () => {
  // One process, stage 3: resident units, autograd's gradients are the optimizer's, and each
  // block's bf16 copies are freed after its forward (train() holds the estimate within 10%).
  it("stage 3 at world 1, bf16-mixed: within 10% of the measured step peak", async () => {
    await train({ strategy: "deepspeed_stage_3", world: 1, steps: 4, flags: ["--precision", "bf16-mixed", "--accumulate", "1"] });
  });
});

describe("checkpoints by parameter name load anywhere", () => {
  it("saved by ZeRO stage 3 on NVMe at world 2 (the state read from its files), resumed by FSDP ×3, DDP ×2, single_device, ZeRO stage 1 ×3 and ZeRO on NVMe ×3 as if uninterrupted", async () => {
    const ref = await reference();
    const path = join(scratch, "zero3-half.safetensors");
    const nvmePath = join(scratch, "nvme-save");
    mkdirSync(nvmePath);
    const first = await train({ strategy: "deepspeed", world: 2, steps: STEPS / 2, options: { config: nvmeConfig(nvmePath) }, flags: ["--save", path] });
    expectLosses(first.losses, ref.losses.slice(0, STEPS / 2));
    expect(existsSync(path)).toBe(true);
    // The full save is streamed (@fulgur/sharding, as FSDP's): each rank holds one unit's gathered
    // buffer and its slice at a time. The largest unit is the root (embeddings of 256 and 16 rows,
    // the head, the final norm, width 32); the model is that and 3 blocks.
    const root = 256 * 32 + 16 * 32 + 64 + 256 * 32;
    const block = 2 * 64 + (3 * 32 * 32 + 3 * 32) + (32 * 32 + 32) + (4 * 32 * 32 + 4 * 32) + (4 * 32 * 32 + 32);
    // Offloaded to NVMe, the rank's optimizer state (two moments of its half of the model) is read
    // in whole for the save, beside the one gathered unit.
    const state = 2 * Math.ceil((root + 3 * block) / 2) * 4;
    for (const peak of first.savePeaks) expect(peak!).toBeLessThanOrEqual(Math.ceil(root / 2) * 2 * 1.5 * 4 + 1.25 * state);
    const resumers: JobSpec[] = [
      { strategy: "fsdp", world: 3 },
      { strategy: "ddp", world: 2, options: { verbose: false } },
      { strategy: "single_device", world: 1 },
      { strategy: "deepspeed_stage_1", world: 3 },
      // The loaded state goes into the files.
      { strategy: "deepspeed", world: 3, options: { config: nvmeConfig(nvmePath) } },
    ];
    for (const spec of resumers) {
      const resumed = await train({ ...spec, flags: ["--resume", path] }, spec.strategy === "ddp");
      expectLosses(resumed.losses, ref.losses.slice(STEPS / 2));
    }
    expect(readdirSync(nvmePath)).toEqual([]);
  });
});

describe("offload keeps some units on the device (offload_optimizer.ratio, offloadKeep)", () => {
  // The fixture's units: 3 blocks of 12,704 elements and the root unit (embeddings, final norm, head) of 16,960, last.
  const block = 12_704;
  const root = 16_960;
  /** Bytes of one rank's slices and AdamW state of a unit at world 2: master, gradient and two moments, fp32. */
  const slices = (numel: number): number => Math.ceil(numel / 2) * 4 * 4;

  it('stage 3 with ratio 0.5 from a config with "auto" batch sizes at world 2 equals one process; the first units are offloaded', async () => {
    const ref = await reference();
    const config = { train_batch_size: "auto", train_micro_batch_size_per_gpu: "auto", zero_optimization: { stage: 3, offload_optimizer: { device: "cpu", ratio: 0.5 } } };
    const job = await train({ strategy: "deepspeed", world: 2, options: { config }, flags: ["--cpu-threads", "2"] });
    expectLosses(job.losses, ref.losses);
    // "auto" filled from the loader (6 a rank), the accumulation (2) and the world (2).
    for (const z of job.zero) expect(z!.batchSizes).toEqual({ train_batch_size: 24, train_micro_batch_size_per_gpu: 6, gradient_accumulation_steps: 2 });
    // Offloaded while within 0.5 × 55,072 elements: blocks 0 and 1 (25,408); block 2 would make 38,112.
    expect(job.stdout).toContain("[rank 0] deepspeed: 2 of 4 units' parameters on the device, 2 of 4 units' optimizer state on the device, the rest on host\n");
    for (const z of job.zero) {
      expect(z!.placement.map((u) => [u.name, u.optimizerState])).toEqual([["model.blocks.0", "host"], ["model.blocks.1", "host"], ["model.blocks.2", "device"], ["", "device"]]);
      // The host holds the two offloaded blocks' slices and state; the device the others' and the root unit gathered.
      expect(z!.held).toEqual({ host: 2 * slices(block), device: slices(block) + slices(root) + root * 4 });
    }
  });

  it("offloadKeep with a budget: kept what the budget allows; its checkpoint resumes in single_device, in ZeRO with everything offloaded and in ZeRO with ratio 0.5", async () => {
    const ref = await reference();
    // What the device needs with everything offloaded, as the strategy estimates it for this job.
    const needed = jobEstimate(new DeepSpeedStrategy({ stage: 3, offloadOptimizer: true, offloadParameters: true })).perDevice.total;
    // 300,000 bytes more: the three blocks' gathered copies (3 × 50,816), then the root unit's
    // slices and state (135,680), 288,128 in all; block 2's slices and state (101,632) do not fit.
    const left = 300_000;
    const path = join(scratch, "zero3-kept.safetensors");
    const first = await train({ strategy: "deepspeed_stage_3_offload", world: 2, steps: STEPS / 2, options: { offloadKeep: needed + left }, flags: ["--save", path] });
    expectLosses(first.losses, ref.losses.slice(0, STEPS / 2));
    expect(first.stdout).toContain("[rank 0] deepspeed_stage_3_offload: 4 of 4 units' parameters on the device, 1 of 4 units' optimizer state on the device, the rest on host\n");
    for (const z of first.zero) {
      expect(z!.placement).toEqual([
        { name: "model.blocks.0", parameters: "device", optimizerState: "host" },
        { name: "model.blocks.1", parameters: "device", optimizerState: "host" },
        { name: "model.blocks.2", parameters: "device", optimizerState: "host" },
        { name: "", parameters: "device", optimizerState: "device" },
      ]);
      expect(z!.held).toEqual({ host: 3 * slices(block), device: slices(root) + (3 * block + root) * 4 });
      // Beyond what full offload holds there (the root unit gathered), the device took at most the budget.
      expect(z!.held.device - root * 4).toBeLessThanOrEqual(left);
    }
    const ratio = { config: { zero_optimization: { stage: 3, offload_optimizer: { device: "cpu", ratio: 0.5 } } } };
    for (const spec of [{ strategy: "single_device", world: 1 }, { strategy: "deepspeed_stage_3_offload", world: 2 }, { strategy: "deepspeed", world: 2, options: ratio }]) {
      const resumed = await train({ ...spec, flags: ["--resume", path] });
      expectLosses(resumed.losses, ref.losses.slice(STEPS / 2));
    }
  });

  it("NVMe offload with offloadKeepHost: the last units' slices and state stay in host memory, the first ones' go to disk, and the losses are one process's", async () => {
    const ref = await reference();
    const nvmePath = join(scratch, "nvme-three-tiers");
    mkdirSync(nvmePath);
    const config = nvmeConfig(nvmePath);
    // What the host holds at its highest with every unit's state on disk (the gradient slices and
    // the optimizer step's pieces read in), as the strategy estimates it for this job: the host's
    // own figure, as on a GPU's host (on the CPU backend the estimate reports the host's share of
    // the moment device and host together peak).
    const needed = jobEstimate(new DeepSpeedStrategy({ config: config as Record<string, unknown> }), { copiesCrossBus: true }).perHost.total;
    // 180,000 bytes more: the root unit's disk share (8,480 elements × 12 bytes: master slice and
    // two moments) is 101,760 and block 2's 76,224, 177,984 in all; block 1's does not fit after them.
    const job = await train({ strategy: "deepspeed", world: 2, options: { config, offloadKeepHost: needed + 180_000 }, flags: ["--cpu-threads", "2", "--nvme-dir", nvmePath] });
    expectLosses(job.losses, ref.losses);
    expect(job.stdout).toContain("[rank 0] deepspeed: 1 of 4 units' parameters on the device, 0 of 4 units' optimizer state on the device, 2 of 4 units' optimizer state in host memory, the rest on nvme and host\n");
    for (const z of job.zero) {
      expect(z!.placement).toEqual([
        { name: "model.blocks.0", parameters: "nvme", optimizerState: "nvme" },
        { name: "model.blocks.1", parameters: "nvme", optimizerState: "nvme" },
        { name: "model.blocks.2", parameters: "host", optimizerState: "host" },
        { name: "", parameters: "device", optimizerState: "host" },
      ]);
    }
    // The host holds block 2's and the root unit's slices and state, and blocks 0 and 1's gradient
    // slices only (their master slices and moments are on disk between steps).
    for (const z of job.zero) expect(z!.held.host).toBe(slices(block) + slices(root) + 2 * (block / 2) * 4);
    expect(readdirSync(nvmePath)).toEqual([]);
  });
});

/** The strategy's estimate for a job of this file at world 2 (32-true), made on the fixture's model on `meta`; `extra` adds to its input. */
function jobEstimate(strategy: DeepSpeedStrategy, extra: Partial<MemoryEstimateInput> = {}): MemoryEstimate {
  return strategy.estimateMemory({
    module: withDevice("meta", () => new FixtureShape()),
    precision: "32-true",
    microBatch: GLOBAL_BATCH / 2 / ACCUMULATE,
    accumulateGradBatches: ACCUMULATE,
    worldSize: 2,
    ...extra,
  });
}

/** The fixture's model (nothing is allocated on `meta`). */
class FixtureShape extends Module {
  constructor() {
    super();
    this.registerModule("model", new GPT({ vocabSize: 256, seqLen: 16, dModel: 32, nLayers: 3, nHeads: 2 }, { seed: 0 }));
  }
  forward(): never {
    throw new Error("only its shape is estimated");
  }
}

describe("what cannot run is refused before any rank starts", () => {
  it("an NVMe directory that is not a directory is named, with its value", async () => {
    const job = await launch({ strategy: "deepspeed_stage_3_offload_nvme", world: 2, options: { nvmePath: join(FIXTURES, "train.mjs") } });
    expect(job.code).not.toBe(0);
    expect(job.stderr).toMatch(/deepspeed_stage_3_offload_nvme: zero_optimization\.offload_optimizer\.nvme_path \/ zero_optimization\.offload_param\.nvme_path \(option nvmePath\): got ".*train\.mjs" .*which is not a directory/);
    expect(job.stdout + job.stderr).not.toContain("[rank ");
  });

  it("a broken config lists every problem", async () => {
    const job = await launch({ strategy: "deepspeed", world: 2, options: { config: join(FIXTURES, "configs", "broken.json") } });
    expect(job.code).not.toBe(0);
    expect(job.stderr).toMatch(/the config ".*broken\.json" has 5 problems:/);
    expect(job.stdout + job.stderr).not.toContain("[rank ");
  });
});
