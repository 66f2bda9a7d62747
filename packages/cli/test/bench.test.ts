/** `fulgur bench`: the CPU matmul line, the GPT line in the anchor's format, and flag validation. */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { gptParamCount } from "@fulgur/nn";
import { tryImport } from "../src/index";
import { cli, spawnBin, tempDir } from "./helpers";

const ANCHOR_FIELDS = ["framework", "strategy", "devices", "params", "d", "L", "T", "B", "step_ms", "tok_s_gpu", "tflops_gpu", "peak_gib", "loss"];

describe("fulgur bench", () => {
  it("without --config prints the CPU matmul JSON line", async () => {
    const out = join(tempDir(), "nested", "dir", "bench.jsonl");
    const r = await cli("bench", "--out", out);
    expect(r.code).toBe(0);
    const lines = r.out.trim().split("\n");
    expect(lines).toHaveLength(1);
    const res = JSON.parse(lines[0]);
    expect(Object.keys(res)).toEqual(["bench", "m", "n", "k", "gflops"]);
    expect(res).toMatchObject({ bench: "cpu_matmul", m: 512, n: 512, k: 512 });
    expect(res.gflops).toBeGreaterThan(0);
    expect(readFileSync(out, "utf8")).toBe(lines[0] + "\n");
  });

  it("--config tiny prints one line with every anchor field, numeric where the anchor's is", async () => {
    const out = join(tempDir(), "gpt.jsonl");
    const r = await cli("bench", "--config", "tiny", "--steps", "2", "--warmup", "1", "--accelerator", "cpu", "--out", out);
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    const lines = r.out.trim().split("\n");
    expect(lines).toHaveLength(1);
    const res = JSON.parse(lines[0]);
    expect(Object.keys(res)).toEqual(ANCHOR_FIELDS);
    expect(res).toMatchObject({ framework: "fulgur", strategy: "single_device", devices: 1, params: gptParamCount("tiny"), d: 64, L: 2, T: 64, B: 8 });
    for (const f of ANCHOR_FIELDS.slice(2)) expect(Number.isFinite(res[f]), f).toBe(true);
    for (const f of ["step_ms", "tok_s_gpu", "tflops_gpu", "peak_gib"]) expect(res[f], f).toBeGreaterThan(0);
    // tok/s and TFLOPS follow from step_ms: B*T tokens and 6*N*tok + 12*L*d*T*tok per step.
    expect(res.tok_s_gpu).toBeCloseTo((8 * 64) / (res.step_ms / 1e3), -2);
    const flops = 6 * res.params * 512 + 12 * 2 * 64 * 64 * 512;
    expect(res.tflops_gpu / (flops / (res.step_ms / 1e3) / 1e12)).toBeCloseTo(1, 1);
    // Random tokens over 256 symbols: the loss is near ln(256) = 5.55.
    expect(res.loss).toBeGreaterThan(4.5);
    expect(res.loss).toBeLessThan(6.5);
    expect(readFileSync(out, "utf8")).toBe(lines[0] + "\n");
  });

  const bad: [string[], string][] = [
    [["--config", "huge"], "error: option '--config <name>' argument 'huge' is invalid. expected one of tiny, small, 1b (a named GPT configuration)"],
    [["--config", "tiny", "--steps", "0"], "error: option '--steps <n>' argument '0' is invalid. expected a positive integer (timed steps)"],
    [["--config", "tiny", "--warmup", "-1"], "error: option '--warmup <n>' argument '-1' is invalid. expected a non-negative integer (untimed warm-up steps)"],
    [["--config", "tiny", "--devices", "1.5"], "error: option '--devices <n>' argument '1.5' is invalid. expected a positive integer (devices on this node)"],
    [["--config", "tiny", "--accelerator", "tpu"], "error: option '--accelerator <name>' argument 'tpu' is invalid. expected one of auto, cpu, cuda"],
    [["--config", "tiny", "--precision", "fp8"], "error: option '--precision <p>' argument 'fp8' is invalid. expected one of 16, 32, 64, bf16, 32-true, 64-true, bf16-mixed, bf16-true, 16-mixed"],
    [["--config", "tiny", "--strategy", "d d p"], "error: option '--strategy <name>' argument 'd d p' is invalid. expected a strategy name: letters, digits, '_', '.', ':' or '-' (see `fulgur strategies`)"],
    [["--steps", "3"], "error: option '--steps <n>' argument '3' is invalid. applies to the GPT benchmark only; add --config tiny|small|1b"],
    [["--config", "tiny", "--devices", "2", "--strategy", "single_device"], "error: option '--devices <n>' argument '2' is invalid. expected 1 with --strategy single_device (pick a distributed strategy such as ddp for several devices)"],
    [["--config", "tiny", "--strategy-options", "[1]"], "error: option '--strategy-options <json>' argument '[1]' is invalid. expected a JSON object (strategy options), got an array"],
    [["--config", "tiny", "--strategy-options", "{stages"], expect.stringMatching(/^error: option '--strategy-options <json>' argument '\{stages' is invalid\. expected a JSON object \(strategy options\); /) as never],
    [["--config", "tiny", "--micro-batches", "4", "--accelerator", "cpu"], "error: option '--micro-batches <m>' argument '4' is invalid. applies to strategies that run the whole batch (pipeline, pipeline_gpipe); single_device does not"],
    [["--config", "tiny", "--size", "64,2,3,64,8"], "error: option '--size <d,L,H,T,B>' argument '64,2,3,64,8' is invalid. expected heads (3) dividing the width (64)"],
    [["--config", "tiny", "--size", "64,2,4,64"], "error: option '--size <d,L,H,T,B>' argument '64,2,4,64' is invalid. expected five positive integers d,L,H,T,B (model width, layers, heads, sequence length, micro-batch)"],
    [["--micro-batches", "4"], "error: option '--micro-batches <m>' argument '4' is invalid. applies to the GPT benchmark only; add --config tiny|small|1b"],
  ];
  for (const [args, message] of bad) {
    it(`rejects ${args.join(" ")} with exit code 2`, async () => {
      const r = await cli("bench", ...args);
      expect(r.code).toBe(2);
      expect(r.err.trim()).toEqual(message);
      expect(r.out).toBe("");
    });
  }

  it("--micro-batches runs the pipeline on B·M rows a step and counts their tokens, as the anchor's pp modes", async () => {
    const r = await cli("bench", "--config", "tiny", "--strategy", "pipeline", "--micro-batches", "2", "--steps", "1", "--warmup", "0", "--accelerator", "cpu");
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    const res = JSON.parse(r.out.trim());
    expect(Object.keys(res)).toEqual([...ANCHOR_FIELDS.slice(0, 8), "micro_batches", ...ANCHOR_FIELDS.slice(8), "bubble_rank0"]);
    expect(res.bubble_rank0).toBeGreaterThanOrEqual(0);
    expect(res.bubble_rank0).toBeLessThan(1);
    expect(res).toMatchObject({ strategy: "pipeline", devices: 1, B: 8, micro_batches: 2 });
    expect(res.tok_s_gpu).toBeCloseTo((2 * 8 * 64) / (res.step_ms / 1e3), -2);
  });

  it("--size trains the anchor's d L H T B with the config's vocabulary", async () => {
    const r = await cli("bench", "--config", "tiny", "--size", "32,3,2,16,2", "--steps", "1", "--warmup", "0", "--accelerator", "cpu");
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    const res = JSON.parse(r.out.trim());
    expect(res).toMatchObject({ d: 32, L: 3, T: 16, B: 2, params: gptParamCount({ dModel: 32, nLayers: 3, nHeads: 2, seqLen: 16, vocabSize: 256 }) });
    expect(res.tok_s_gpu).toBeCloseTo((2 * 16) / (res.step_ms / 1e3), -2);
  });

  it("--strategy-options reach the strategy, whose validation names a bad field before training", async () => {
    const r = await cli("bench", "--config", "tiny", "--strategy", "fsdp", "--strategy-options", '{"shardingStrategy":"HALF_SHARD"}', "--steps", "1", "--warmup", "0", "--accelerator", "cpu");
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/shardingStrategy/);
    expect(r.err).toMatch(/HALF_SHARD/);
    expect(r.out).toBe("");
  });

  it("passes a strategy by name to the Trainer, which names what is registered", async () => {
    const r = await cli("bench", "--config", "tiny", "--strategy", "my_strategy", "--steps", "1", "--warmup", "0", "--accelerator", "cpu");
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^fulgur: strategy "my_strategy" is not registered\. Registered strategy names: .*single_device/);
    expect(r.out).toBe("");
  });

  it("names the package of a Fulgur strategy that is not installed", async () => {
    if ((await tryImport("@fulgur/strategy-fsdp")).status === "loaded") return; // installed here: nothing to report
    const r = await cli("bench", "--config", "tiny", "--strategy", "fsdp", "--steps", "1", "--warmup", "0", "--accelerator", "cpu");
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/^fulgur: strategy "fsdp" is provided by @fulgur\/strategy-fsdp, which is not installed/);
  });

  it("inside a launched rank, hands rank 0's line back through FULGUR_BENCH_RESULT instead of stdout", () => {
    const file = join(tempDir(), "result.json");
    const env = { ...process.env, RANK: "0", WORLD_SIZE: "1", LOCAL_RANK: "0", LOCAL_WORLD_SIZE: "1", MASTER_ADDR: "127.0.0.1", MASTER_PORT: "29533", FULGUR_BENCH_RESULT: file };
    const r = spawnBin(["bench", "--config", "tiny", "--steps", "1", "--warmup", "0", "--accelerator", "cpu"], { env });
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(r.out).toBe("");
    const res = JSON.parse(readFileSync(file, "utf8"));
    expect(Object.keys(res)).toEqual(ANCHOR_FIELDS);
    expect(res.devices).toBe(1);
  });
});
