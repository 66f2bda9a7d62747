import { execFileSync } from "node:child_process";
import { existsSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

const main = join(import.meta.dirname, "..", "dist", "main.js");

function run(args: string[]): string {
  return execFileSync(process.execPath, [main, ...args], { encoding: "utf8", env: { ...process.env, CI: "true" } });
}

describe("GPT demo", () => {
  it("trains, lowers the loss, saves a checkpoint and resumes from it", () => {
    const dir = mkdtempSync(join(tmpdir(), "fulgur-demo-"));
    const corpus = join(dir, "corpus.txt");
    writeFileSync(corpus, "Fulgur trains models in TypeScript on CPUs and GPUs. ".repeat(200));
    const common = ["--config", "tiny", "--data", corpus, "--out", join(dir, "out"), "--accelerator", "cpu", "--log-every-n-steps", "5", "--every-n-steps", "10"];
    const first = run([...common, "--max-steps", "30", "--lr", "1e-2"]);
    const m = /loss (\d+\.\d+) -> (\d+\.\d+)/.exec(first);
    expect(m, first).not.toBeNull();
    expect(Number(m![2])).toBeLessThan(Number(m![1]) - 2);
    expect(existsSync(join(dir, "out", "checkpoints", "last.safetensors"))).toBe(true);
    const second = run([...common, "--max-steps", "40", "--lr", "1e-2", "--resume"]);
    expect(second).toMatch(/resuming from .*last\.safetensors/);
    expect(second).toMatch(/done: 40 steps/);
  });

  it("rejects bad options before reading any data", () => {
    expect(() => execFileSync(process.execPath, [main, "--config", "huge"], { encoding: "utf8", stdio: "pipe" })).toThrow(
      /--config.*must be one of tiny, small, 1b/,
    );
  });
});
