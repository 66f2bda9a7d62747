/** Test helpers: run the program in-process with captured output, and build small corpora and configs. */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll } from "vitest";
import { runCli } from "../src/index";

export interface Captured {
  code: number;
  out: string;
  err: string;
}

export async function cli(...argv: string[]): Promise<Captured> {
  let out = "";
  let err = "";
  const code = await runCli(argv, { out: (s) => (out += s), err: (s) => (err += s) });
  return { code, out, err };
}

export const BIN = join(dirname(fileURLToPath(import.meta.url)), "..", "dist", "bin.js");

/** Runs the built executable; the package must have been built (nx's test target builds it first). */
export function spawnBin(args: string[], options: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Captured {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: build the package first (npx nx run @fulgur/cli:build)`);
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: options.cwd, env: options.env ?? process.env, encoding: "utf8", timeout: 60_000 });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

/** Directories made by tempDir in this test file, removed when the file's tests are done. */
const made: string[] = [];
afterAll(() => {
  for (const d of made.splice(0)) rmSync(d, { recursive: true, force: true });
});

export function tempDir(prefix = "fulgur-cli-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  made.push(dir);
  return dir;
}

const TEXT = `Fulgur trains models with billions of parameters in TypeScript, on one GPU or many.
A user writes a TrainingModule, hands it to a Trainer, and picks a strategy by name.
Every strategy, the CUDA accelerator and every checkpoint format ships as its own package.
`;

/** A directory of a few KiB of text: enough samples of seqLen 16 for batches of 4. */
export function writeCorpus(dir: string): string {
  const data = join(dir, "data");
  mkdirSync(data, { recursive: true });
  writeFileSync(join(data, "a.txt"), TEXT.repeat(4));
  writeFileSync(join(data, "b.md"), TEXT.split("").reverse().join("").repeat(2));
  return data;
}

/** The tiny config of the tests: dModel 32, one layer, seqLen 16, five steps, no progress bar. */
export function tinyConfig(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    model: { config: { dModel: 32, nLayers: 1, nHeads: 2, seqLen: 16 }, lr: 3e-3, seed: 0 },
    data: { paths: ["data"], batchSize: 4, shuffle: false },
    trainer: { maxSteps: 5, enableProgressBar: false, defaultRootDir: "out", accelerator: "cpu" },
    ...overrides,
  };
}

export function writeJson(path: string, value: unknown): string {
  writeFileSync(path, JSON.stringify(value, null, 2));
  return path;
}
