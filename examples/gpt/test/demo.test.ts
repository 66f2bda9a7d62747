import { execFileSync, spawnSync } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

const main = join(import.meta.dirname, "..", "dist", "main.js");
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "fulgur-demo-"));
  dirs.push(d);
  return d;
}

function run(args: string[]): string {
  return execFileSync(process.execPath, [main, ...args], { encoding: "utf8", env: { ...process.env, CI: "true" } });
}

/** Runs the demo and returns its exit code and everything it printed (warnings go to stderr). */
function runAll(args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, [main, ...args], { encoding: "utf8", env: { ...process.env, CI: "true" } });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** A corpus directory and the options every run of a test shares. */
function setup(): { dir: string; data: string; common: string[] } {
  const dir = tempDir();
  const data = join(dir, "data");
  mkdirSync(data);
  writeFileSync(join(data, "corpus.txt"), "Fulgur trains models in TypeScript on CPUs and GPUs. ".repeat(200));
  const common = ["--config", "tiny", "--data", data, "--out", join(dir, "out"), "--accelerator", "cpu", "--log-every-n-steps", "5", "--every-n-steps", "10"];
  return { dir, data, common };
}

describe("GPT demo", () => {
  it("trains, lowers the loss, saves a checkpoint and resumes from it", () => {
    const { dir, common } = setup();
    const first = run([...common, "--max-steps", "30", "--lr", "1e-2"]);
    const m = /loss (\d+\.\d+) -> (\d+\.\d+)/.exec(first);
    expect(m, first).not.toBeNull();
    expect(Number(m![2])).toBeLessThan(Number(m![1]) - 2);
    expect(existsSync(join(dir, "out", "checkpoints", "last.safetensors"))).toBe(true);
    const second = run([...common, "--max-steps", "40", "--lr", "1e-2", "--resume"]);
    expect(second).toMatch(/resuming from .*last\.safetensors/);
    expect(second).toMatch(/done: 40 steps/);
  });

  it("a resume on different data says so; the same data says nothing", () => {
    const { data, common } = setup();
    expect(runAll([...common, "--max-steps", "10"]).code).toBe(0);
    const same = runAll([...common, "--max-steps", "12", "--resume"]);
    expect(same.code).toBe(0);
    expect(same.err).not.toMatch(/warning/);
    appendFileSync(join(data, "corpus.txt"), "More text arrived after the checkpoint was written. ".repeat(20));
    writeFileSync(join(data, "new.md"), "A file that was not there before. ".repeat(20));
    const changed = runAll([...common, "--max-steps", "14", "--resume"]);
    expect(changed.code).toBe(0);
    expect(changed.err).toMatch(
      /^warning: the training data differs from the checkpoint's: 1 file\(s\) added \(.*new\.md\), 1 changed size \(.*corpus\.txt\); 10,600 bytes then, 12,320 now\. The resumed run continues on different data\.$/m,
    );
  });

  it("a fresh run does not replace an earlier run's last checkpoint unless told to", () => {
    const { dir, common } = setup();
    expect(runAll([...common, "--max-steps", "10"]).code).toBe(0);
    const again = runAll([...common, "--max-steps", "5"]);
    expect(again.code).toBe(1);
    expect(again.err).toContain(
      `error: ${join(dir, "out", "checkpoints", "last.safetensors")} exists from an earlier run: continue it with --resume, start over with --overwrite, or write elsewhere with --out <dir>`,
    );
    const over = runAll([...common, "--max-steps", "5", "--overwrite"]);
    expect(over.code).toBe(0);
    expect(over.out).toMatch(/done: 5 steps/);
  });

  it("rejects bad options before reading any data", () => {
    expect(() => execFileSync(process.execPath, [main, "--config", "huge"], { encoding: "utf8", stdio: "pipe" })).toThrow(
      /--config.*must be one of tiny, small, 1b/,
    );
  });
});
