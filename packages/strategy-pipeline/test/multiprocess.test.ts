/**
 * Pipeline jobs of 2 to 4 processes on loopback, started as a user starts them (a script asking
 * the Trainer for `devices: N`, which relaunches itself). Held to DESIGN.md decision 8: each
 * schedule gives the per-step losses of one process on the same batches within 1e-5, over 10 steps
 * (20 for FSDP inside stages) of a 4-block GPT with gradient accumulation (2 batches a step), 4 micro-batches and clipping.
 * The fixture imports the BUILT packages (`npx tsup` first).
 */
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { type Timeline, renderSvg, renderText } from "../src/index";

const FIXTURE = join(dirname(fileURLToPath(import.meta.url)), "fixtures", "train.mjs");
const RANK_VARS = /^(RANK|WORLD_SIZE|LOCAL_RANK|LOCAL_WORLD_SIZE|NODE_RANK|GROUP_RANK|MASTER_ADDR|MASTER_PORT|FULGUR_STORE_TOKEN|SLURM_.*)$/;
const STEPS = 10;

const dirs: string[] = [];
const timings: string[] = [];
afterAll(() => {
  dirs.forEach((d) => rmSync(d, { recursive: true, force: true }));
  console.log(`pipeline multi-process timings:\n  ${timings.join("\n  ")}`);
});

interface RankResult {
  rank: number;
  losses: number[];
  timeline: Timeline | null;
  /** Parameter bytes in memory (not on meta). */
  heldBytes: number;
  /** Each step's highest tensor memory above what was live before the Trainer started. */
  stepPeaks: number[];
  /** The strategy's estimate for the job, made on a meta copy of the model. */
  estimate: { device: number; host: number; where: string | null };
}

function train(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !RANK_VARS.test(k)));
  const started = Date.now();
  const child = spawn(process.execPath, [FIXTURE, ...args], { env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
  return new Promise((resolve) =>
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - started });
    }),
  );
}

/** The Trainer warns when more CPU processes than cores are asked for; nothing else may reach stderr. */
const quiet = (stderr: string) => stderr.replace(/^fulgur: devices: \d+ on the CPU accelerator starts .*\n/m, "");

async function job(strategy: string, world: number, options: object, batch = 8, layers = 4, extra: string[] = [], steps = STEPS): Promise<{ ranks: RankResult[]; stdout: string }> {
  const dir = mkdtempSync(join(tmpdir(), "fulgur-pipeline-"));
  dirs.push(dir);
  const run = await train(["--out", dir, "--strategy", strategy, "--devices", String(world), "--batch", String(batch), "--accumulate", "2", "--steps", String(steps), "--layers", String(layers), "--options", JSON.stringify(options), ...extra]);
  timings.push(`${strategy} ×${world} ${layers} blocks ${JSON.stringify(options)}: ${run.ms} ms`);
  expect(quiet(run.stderr), run.stderr).toBe("");
  expect(run.code).toBe(0);
  const ranks = Array.from({ length: world }, (_, r) => JSON.parse(readFileSync(join(dir, `result-rank${r}.json`), "utf8")) as RankResult);
  return { ranks, stdout: run.stdout };
}

function expectSameLosses(actual: readonly number[], expected: readonly number[]): void {
  expect(actual).toHaveLength(expected.length);
  actual.forEach((l, i) => expect(Math.abs(l - expected[i]), `step ${i + 1}: ${l} vs ${expected[i]}`).toBeLessThan(1e-5));
}

const references = new Map<string, number[]>();
/** One process's losses for a GPT of `layers` blocks on batches of `batch`, run once per pair. */
async function single(layers = 4, batch = 8, steps = STEPS): Promise<number[]> {
  const key = `${layers} ${batch} ${steps}`;
  const known = references.get(key);
  if (known) return known;
  const { ranks } = await job("single_device", 1, {}, batch, layers, [], steps);
  const reference = ranks[0].losses;
  expect(reference).toHaveLength(steps);
  expect(reference.at(-1)!).toBeLessThan(reference[0] - 1);
  references.set(key, reference);
  return reference;
}

describe("every schedule equals one process (DESIGN.md decision 8)", () => {
  // Every schedule at 2, 3 and 4 stages; interleaved cuts 2 chunks a rank, so its GPT has 8 blocks.
  // Interleaving needs micro-batches in multiples of the stages: 3 stages take 3 of a batch of 6.
  const cases: { strategy: string; world: number; options: Record<string, unknown>; layers?: number; batch?: number }[] = [
    { strategy: "pipeline_gpipe", world: 2, options: { microBatches: 4 } },
    { strategy: "pipeline_gpipe", world: 3, options: { microBatches: 4 } },
    { strategy: "pipeline_gpipe", world: 4, options: { microBatches: 4 } },
    { strategy: "pipeline", world: 2, options: { microBatches: 4 } },
    { strategy: "pipeline_1f1b", world: 3, options: { microBatches: 4, balance: "params" } },
    { strategy: "pipeline", world: 4, options: { microBatches: 4 } },
    { strategy: "pipeline", world: 2, options: { microBatches: 4, schedule: "interleaved", virtualStages: 2 } },
    { strategy: "pipeline", world: 3, options: { microBatches: 3, schedule: "interleaved", virtualStages: 2 }, layers: 8, batch: 6 },
    { strategy: "pipeline", world: 4, options: { microBatches: 4, schedule: "interleaved", virtualStages: 2 }, layers: 8 },
    { strategy: "pipeline", world: 2, options: { microBatches: 4, schedule: "zb-h1", splitPoints: [1] } },
    { strategy: "pipeline", world: 3, options: { microBatches: 4, schedule: "zb-h1" } },
    { strategy: "pipeline", world: 4, options: { microBatches: 4, schedule: "zb-h1" } },
  ];
  for (const c of cases) {
    it(`${c.strategy} ${JSON.stringify(c.options)} at world ${c.world}${c.layers ? ` (${c.layers} blocks)` : ""}`, async () => {
      const ref = await single(c.layers, c.batch);
      const { ranks, stdout } = await job(c.strategy, c.world, c.options, c.batch, c.layers);
      // Every rank reports the same loss: the last stage's, broadcast.
      for (const r of ranks) expectSameLosses(r.losses, ref);
      // The plan's promise (issue 15): the estimate (the rank holding most) within 10% of the highest
      // measured step peak, ZB-H1's deferred weight passes included; memory is deterministic
      // (decision 2), so every step after the first peaks alike.
      for (const r of ranks) expect(new Set(r.stepPeaks.slice(1)).size, JSON.stringify(r.stepPeaks)).toBe(1);
      const measured = Math.max(...ranks.map((r) => r.stepPeaks[1]));
      const estimate = ranks[0].estimate;
      expect(Math.abs(estimate.device / measured - 1), `estimated ${estimate.device} bytes (peak: ${estimate.where}), measured ${measured}`).toBeLessThan(0.1);
      expect(stdout).toContain(`[rank 0] ${c.strategy}: ${c.world} process(es) joined`);
      // The timeline the executor recorded on the last batch: every compute action of every rank, drawable.
      const t = ranks[0].timeline!;
      const m = c.options.microBatches as number;
      const v = (c.options.virtualStages as number | undefined) ?? 1;
      const perRank = m * v * (c.options.schedule === "zb-h1" ? 3 : 2);
      expect(t.ranks.map((l) => l.length)).toEqual(new Array(c.world).fill(perRank));
      if (c.strategy === "pipeline" && c.layers === undefined && c.options.schedule === undefined) {
        // [Note: a rank holds its stages]: its blocks (4 / world), the embeddings on the first rank
        // and the final norm and head on the last; never the whole model (4 bytes a parameter).
        const [d, V, T] = [32, 256, 16];
        const block = 12 * d * d + 13 * d;
        const held = (r: number) => 4 * ((4 / c.world) * block + (r === 0 ? V * d + T * d : 0) + (r === c.world - 1 ? 2 * d + V * d : 0));
        expect(ranks.map((r) => r.heldBytes)).toEqual(Array.from({ length: c.world }, (_, r) => held(r)));
        const whole = 4 * (4 * block + V * d + T * d + 2 * d + V * d);
        for (const r of ranks) expect(r.heldBytes).toBeLessThan(whole / (c.world === 2 ? 1.5 : 2.5));
      }
      if (c.options.schedule === "zb-h1") {
        // W runs the weight-gradient products B left (about half of a backward's work), not nothing.
        const total = (kind: string) => t.ranks.flat().reduce((sum, x) => sum + (x.kind === kind ? x.end - x.start : 0), 0);
        expect(total("W")).toBeGreaterThan(0.1 * total("B"));
      }
      const text = renderText(t, { maxColumns: 80 });
      expect(text.split("\n")).toHaveLength(c.world + 3);
      expect(renderSvg(t).match(/<rect /g)).toHaveLength(c.world * perRank);
    });
  }

  it("a schedule that cannot run at the world size is refused before any rank starts, naming the numbers", async () => {
    const dir = mkdtempSync(join(tmpdir(), "fulgur-pipeline-"));
    dirs.push(dir);
    const options = { microBatches: 4, schedule: "interleaved", virtualStages: 2 };
    const run = await train(["--out", dir, "--strategy", "pipeline", "--devices", "3", "--batch", "8", "--steps", "1", "--layers", "8", "--options", JSON.stringify(options)]);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain("pipeline: interleaved schedule microBatches: got 4; expected a multiple of stages (3)");
    expect(run.stdout + run.stderr).not.toMatch(/\[rank \d\]/);
  });

  it("checkpoints: a pipeline's (sharded, each stage's rank writes its own) resumes in the pipeline, single_device and FSDP; single_device's resumes in the pipeline", async () => {
    const ref = await single();
    const half = STEPS / 2;
    const dir = mkdtempSync(join(tmpdir(), "fulgur-pipeline-ckpt-"));
    dirs.push(dir);
    const path = join(dir, "pipe");
    const first = await job("pipeline", 2, { microBatches: 4 }, 8, 4, ["--save", path], half);
    for (const r of first.ranks) expectSameLosses(r.losses, ref.slice(0, half));
    expect(readFileSync(join(path, "index.json"), "utf8")).toContain("model.blocks.3.fc2.weight");
    // A pipeline's ranks share each batch of 8; FSDP's two ranks take 4 each and log their own halves.
    for (const [strategy, world, options, batch] of [["pipeline", 2, { microBatches: 4 }, 8], ["single_device", 1, {}, 8], ["fsdp", 2, {}, 4]] as const) {
      const resumed = await job(strategy, world, options, batch, 4, ["--resume", path], STEPS);
      const mean = resumed.ranks[0].losses.map((_, i) => resumed.ranks.reduce((sum, r) => sum + r.losses[i], 0) / resumed.ranks.length);
      expectSameLosses(mean, ref.slice(half));
    }
    const full = join(dir, "single.safetensors");
    await job("single_device", 1, {}, 8, 4, ["--save", full], half);
    const back = await job("pipeline", 2, { microBatches: 4 }, 8, 4, ["--resume", full], STEPS);
    for (const r of back.ranks) expectSameLosses(r.losses, ref.slice(half));
  });

  it("dataParallel fsdp: 2 stages, each sharded over 2 replicas, equal one process on the same global batch over 20 steps", async () => {
    const ref = await single(4, 8, 20);
    const { ranks, stdout } = await job("pipeline", 4, { stages: 2, microBatches: 2, dataParallel: "fsdp" }, 4, 4, [], 20);
    for (const r of ranks) expectSameLosses(r.losses, ref);
    expect(stdout).toContain("2 stages × 2 replicas");
    // Each rank holds half of its stage (its slices, padded to a multiple of 2), nothing of the other.
    const [d, V, T] = [32, 256, 16];
    const block = 12 * d * d + 13 * d;
    const stage = (s: number) => 2 * block + (s === 0 ? V * d + T * d : 2 * d + V * d);
    ranks.forEach((r, rank) => {
      const half = (4 * stage(Math.floor(rank / 2))) / 2;
      expect(r.heldBytes).toBeGreaterThanOrEqual(half);
      expect(r.heldBytes).toBeLessThan(half + 4 * 64);
    });
  });

  it("checkpoints with dataParallel fsdp: each rank writes its segments; they resume in single_device, and single_device's in the sharded pipeline", async () => {
    const ref = await single();
    const half = STEPS / 2;
    const dir = mkdtempSync(join(tmpdir(), "fulgur-pipeline-ckpt-"));
    dirs.push(dir);
    const path = join(dir, "pipe-fsdp");
    const options = { stages: 2, microBatches: 2, dataParallel: "fsdp" };
    const first = await job("pipeline", 4, options, 4, 4, ["--save", path], half);
    for (const r of first.ranks) expectSameLosses(r.losses, ref.slice(0, half));
    // Replicas hold different halves of a stage: both write, as pieces of the whole tensor.
    const index = JSON.parse(readFileSync(join(path, "index.json"), "utf8")) as { tensors: Record<string, { shape: number[]; pieces: { file: string }[] }> };
    const head = Object.entries(index.tensors).find(([k]) => k.endsWith("model.head.weight") && !k.startsWith("optimizer"))![1];
    expect(head.shape).toEqual([256, 32]);
    expect(head.pieces.map((p) => p.file)).toEqual(["rank-00002-of-00004.safetensors", "rank-00003-of-00004.safetensors"]);
    expect(Object.keys(index.tensors)).toContain("optimizer.state.model.emb.weight.exp_avg");
    const resumed = await job("single_device", 1, {}, 8, 4, ["--resume", path], STEPS);
    expectSameLosses(resumed.ranks[0].losses, ref.slice(half));
    const full = join(dir, "single.safetensors");
    await job("single_device", 1, {}, 8, 4, ["--save", full], half);
    const back = await job("pipeline", 4, options, 4, 4, ["--resume", full], STEPS);
    for (const r of back.ranks) expectSameLosses(r.losses, ref.slice(half));
  });

  it("dataParallel ddp: 2 stages × 2 replicas equal one process on the same global batch", async () => {
    const ref = await single();
    const { ranks, stdout } = await job("pipeline", 4, { stages: 2, microBatches: 2, dataParallel: "ddp" }, 4);
    for (const r of ranks) expectSameLosses(r.losses, ref);
    expect(stdout).toContain("2 stages × 2 replicas");
  });
});
