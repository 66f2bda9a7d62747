/**
 * bench/sweep.sh on the CPU: the dry run (Fulgur's ranks on the CPU, the anchor's commands recorded,
 * not run), the results file it appends to, skipped pairs, bad options, and the summary table.
 * Needs the built CLI (nx builds the package before `test`) and bash; no GPU, no torch.
 */
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { spawnBin, tempDir } from "./helpers";

const REPO = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const SWEEP = join(REPO, "bench", "sweep.sh");
const SUMMARIZE = join(REPO, "bench", "summarize-sweep.mjs");

interface Ran {
  code: number;
  out: string;
  err: string;
}

function sweep(...args: string[]): Ran {
  const r = spawnSync("bash", [SWEEP, ...args], { cwd: REPO, encoding: "utf8", timeout: 120_000 });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

function jsonLines(file: string): Record<string, unknown>[] {
  return readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

function expectHeader(h: Record<string, unknown>, commandPart: string): void {
  expect(h.date).toMatch(/^\d{4}-\d{2}-\d{2}T/);
  expect(h.command).toContain(commandPart);
  expect(h.device).toMatchObject({ name: expect.any(String), gpus: expect.any(Number) });
  expect(h).toMatchObject({ devices: 2, dry_run: true, config: "tiny" });
  expect(h.pair).toBeUndefined();
}

describe("bench/sweep.sh --dry-run", () => {
  it("runs Fulgur for each pair on the CPU beside the anchor command it would run, and appends to one file", () => {
    const out = join(tempDir("fulgur-sweep-"), "sweep.jsonl");
    const r = sweep("--dry-run", "--devices", "2", "--only", "fsdp,fsdp_grad_op,pp_1f1b", "--out", out);
    expect(r.code, r.err).toBe(0);
    const lines = jsonLines(out);
    // header, then per pair the anchor's line and Fulgur's line, pair by pair, in the table's order
    expect(lines).toHaveLength(7);
    expectHeader(lines[0], "--dry-run --devices 2 --only fsdp,fsdp_grad_op,pp_1f1b --out");
    expect((lines[0].pairs as { pair: string }[]).map((p) => p.pair)).toEqual(["fsdp", "fsdp_grad_op", "pp_1f1b"]);
    const expected: [string, string, string, string][] = [
      ["fsdp", "fsdp", "fsdp", ""],
      ["fsdp_grad_op", "fsdp_grad_op", "fsdp_shard_grad_op", ""],
      ["pp_1f1b", "pp_1f1b", "pipeline", " --micro-batches 8"],
    ];
    for (const [i, [pair, mode, strategy, micro]] of expected.entries()) {
      const anchor = lines[1 + 2 * i];
      const fulgur = lines[2 + 2 * i];
      expect(anchor).toMatchObject({ pair, anchor: mode, dry_run: true });
      const env = micro ? "PP_MICRO=8 " : "";
      expect(anchor.would_run).toMatch(new RegExp(`^${env}torchrun --nproc_per_node 2 \\S*gpt_torch\\.py ${mode} 64 2 4 64 8$`));
      expect(fulgur).toMatchObject({ pair, fulgur: strategy });
      expect(fulgur.command).toBe(`node packages/cli/dist/bin.js bench --config tiny --devices 2 --strategy ${strategy}${micro} --accelerator cpu --steps 2 --warmup 1`);
      const res = fulgur.result as Record<string, number | string>;
      expect(res).toMatchObject({ framework: "fulgur", strategy, devices: 2 });
      expect(res.step_ms as number).toBeGreaterThan(0);
      expect(res.tok_s_gpu as number).toBeGreaterThan(0);
      expect(Number.isFinite(res.loss)).toBe(true);
    }
    expect(lines.some((l) => "skipped" in l || "error" in l)).toBe(false);
    // the lines also go to stdout, followed by the table
    expect(r.out).toContain(`{"pair":"fsdp","fulgur":"fsdp"`);
    expect(r.out).toMatch(/\| fsdp \| fsdp \| fsdp \| — \| [\d.]+ \|/);
    expect(r.out).toMatch(/\| fsdp_grad_op \| fsdp_grad_op \| fsdp_shard_grad_op \|.*\| dry run \|/);
    expect(existsSync(out.replace(/\.jsonl$/, ".log"))).toBe(true);
  });

  it("skips a pair whose Fulgur strategy is not registered, or needs options bench cannot take, with a line and a reason", () => {
    const dir = tempDir("fulgur-sweep-");
    const pairs = [{ pair: "ghost", anchor: "fsdp", fulgur: "no_such_strategy", target: 1.15 }];
    const takesOptions = spawnBin(["bench", "--help"]).out.includes("--strategy-options");
    if (!takesOptions) pairs.push({ pair: "ac", anchor: "fsdp_ac", fulgur: "fsdp", options: { activationCheckpointingPolicy: ["Block"] } } as never);
    const table = join(dir, "pairs.json");
    writeFileSync(table, JSON.stringify({ pairs }));
    const out = join(dir, "skips.jsonl");
    const r = sweep("--dry-run", "--devices", "2", "--pairs", table, "--out", out);
    expect(r.code, r.err).toBe(0);
    const lines = jsonLines(out);
    expectHeader(lines[0], "--pairs");
    expect(lines[1]).toEqual({ pair: "ghost", skipped: "no_such_strategy", anchor: "fsdp", reason: expect.stringMatching(/not registered/) });
    expect(r.err).toMatch(/skipping ghost .*no_such_strategy.*not registered/);
    if (!takesOptions) {
      expect(lines[2]).toMatchObject({ pair: "ac", skipped: "fsdp", reason: expect.stringMatching(/--strategy-options/) });
    }
    expect(lines).toHaveLength(takesOptions ? 2 : 3);
    expect(r.out).toMatch(/\| ghost \|.*\| skipped \|/);
  });

  const bad: [string[], string][] = [
    [["--devices", "0"], "sweep.sh: --devices must be a positive integer, got '0'"],
    [["--devices", "2x"], "sweep.sh: --devices must be a positive integer, got '2x'"],
    [["--config", "7b"], "sweep.sh: --config must be one of tiny, small, 1b, got '7b'"],
    [["--only", "fsdp,nope"], 'sweep.sh: --only: unknown pair "nope"; the pairs are zero1, fsdp, fsdp_grad_op, fsdp_ac, fsdp_offload, pp_gpipe, pp_1f1b'],
    [["--frobnicate"], "sweep.sh: unknown option '--frobnicate' (see bench/sweep.sh --help)"],
    [["--anchor"], "sweep.sh: --anchor needs a value"],
  ];
  for (const [args, message] of bad) {
    it(`refuses ${args.join(" ")} with exit code 2 before running or writing anything`, () => {
      const out = join(tempDir("fulgur-sweep-"), "never.jsonl");
      const r = sweep("--dry-run", ...args, "--out", out);
      expect(r.code).toBe(2);
      expect(r.err.trim().startsWith(message), r.err).toBe(true);
      expect(r.out).toBe("");
      expect(existsSync(out)).toBe(false);
    });
  }

  it("refuses a real run without GPUs rather than falling back to the CPU", () => {
    const dir = tempDir("fulgur-sweep-");
    const out = join(dir, "never.jsonl");
    // an nvidia-smi that lists nothing, whatever this machine has
    writeFileSync(join(dir, "nvidia-smi"), "#!/bin/sh\nexit 9\n", { mode: 0o755 });
    const env = { ...process.env, PATH: `${dir}:${dirname(process.execPath)}:${process.env.PATH ?? "/usr/bin:/bin"}` };
    const r = spawnSync("bash", [SWEEP, "--devices", "2", "--out", out], { cwd: REPO, encoding: "utf8", env });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/^sweep\.sh: nvidia-smi finds no GPU/);
    expect(existsSync(out)).toBe(false);
  });
});

describe("bench/summarize-sweep.mjs", () => {
  it("prints step ms, tokens/s per GPU, peak GiB and Fulgur/PyTorch per pair of the last sweep, with targets, bubbles and skips", () => {
    const file = join(tempDir("fulgur-sweep-"), "gpu.jsonl");
    const res = (framework: string, step_ms: number, tok_s_gpu: number, peak_gib: number, extra = {}) =>
      ({ framework, devices: 2, step_ms, tok_s_gpu, tflops_gpu: 1, peak_gib, loss: 0.5, ...extra });
    const old = { date: "2026-12-01T00:00:00Z", device: { name: "NVIDIA H200", driver: "1", gpus: 2 }, command: "old", devices: 2, config: "1b", pairs: [] };
    const header = {
      date: "2026-12-05T00:00:00Z", device: { name: "NVIDIA H200", driver: "580.159.04", gpus: 2 }, command: "bench/sweep.sh --devices 2",
      devices: 2, config: "1b", dry_run: false, pp_micro: 8,
      pairs: [
        { pair: "fsdp", anchor: "fsdp", fulgur: "fsdp", target: 1.15 },
        { pair: "fsdp_offload", anchor: "fsdp_offload", fulgur: "fsdp_cpu_offload", target: 3 },
        { pair: "pp_1f1b", anchor: "pp_1f1b", fulgur: "pipeline", pipeline: true, target: 1.15 },
        { pair: "pp_gpipe", anchor: "pp_gpipe", fulgur: "pipeline_gpipe", pipeline: true, target: 1.15 },
        { pair: "fsdp_ac", anchor: "fsdp_ac", fulgur: "fsdp", target: 1.15 },
      ],
    };
    const body = [
      { pair: "fsdp", anchor: "fsdp", result: res("pytorch", 100, 40000, 10) },
      { pair: "fsdp", fulgur: "fsdp", result: res("fulgur", 80, 50000, 9.5) },
      { pair: "fsdp_offload", anchor: "fsdp_offload", result: res("pytorch", 1000, 4000, 5) },
      { pair: "fsdp_offload", fulgur: "fsdp_cpu_offload", result: res("fulgur", 500, 8000, 4) },
      { pair: "pp_1f1b", anchor: "pp_1f1b", result: res("pytorch", 400, 40000, 20, { micro_batches: 8 }) },
      { pair: "pp_1f1b", fulgur: "pipeline", result: res("fulgur", 300, 48000, 19, { micro_batches: 8, bubble: 0.11 }) },
      { pair: "pp_gpipe", anchor: "pp_gpipe", result: res("pytorch", 400, 40000, 20, { micro_batches: 8 }) },
      { pair: "pp_gpipe", fulgur: "pipeline_gpipe", result: res("fulgur", 300, 48000, 21, { micro_batches: 8 }) },
      { pair: "fsdp_ac", skipped: "fsdp", anchor: "fsdp_ac", reason: "needs strategy options" },
    ];
    writeFileSync(file, [old, { pair: "x", anchor: "x", result: res("pytorch", 1, 1, 1) }, header, ...body].map((o) => JSON.stringify(o)).join("\n") + "\n");
    const r = spawnSync(process.execPath, [SUMMARIZE, file], { encoding: "utf8" });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain("Sweep of 2026-12-05T00:00:00Z: NVIDIA H200 (driver 580.159.04), 2 of 2 GPU(s), config 1b");
    expect(r.stdout).toContain("| fsdp | fsdp | fsdp | 100 | 80 | 40,000 | 50,000 | 10 | 9.5 | 1.25× | 1.15× | meets |");
    expect(r.stdout).toContain("| fsdp_offload | fsdp_offload | fsdp_cpu_offload | 1,000 | 500 | 4,000 | 8,000 | 5 | 4 | 2.00× | 3× | misses (speed) |");
    expect(r.stdout).toMatch(/\| pp_gpipe \|.*\| 1\.20× \| 1\.15× \| misses \(memory\) \|/);
    expect(r.stdout).toContain("- pp_1f1b: bubble: bubble 0.11");
    expect(r.stdout).toContain("- pp_gpipe: bubble: not reported");
    expect(r.stdout).toContain("- fsdp_ac: skipped: needs strategy options");
    expect(r.stdout).not.toContain("| x |");
  });
});
