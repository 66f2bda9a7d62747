// The pipeline on a GPU: two stages share the one GPU through the host-staged process group
// (DESIGN.md decision 16), each rank sending activations and gradients to the other, and must give
// single-device bf16 losses on the `small` config. Speed across GPUs is the benchmark sweep's.
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { CudaAccelerator } from "@fulgur/accelerator-cuda";

const gpu = new CudaAccelerator().isAvailable();
const FIXTURE = join(dirname(fileURLToPath(import.meta.url)), "..", "fixtures", "train.mjs");
const RANK_VARS = /^(RANK|WORLD_SIZE|LOCAL_RANK|LOCAL_WORLD_SIZE|NODE_RANK|GROUP_RANK|MASTER_ADDR|MASTER_PORT|FULGUR_STORE_TOKEN)$/;
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

async function run(strategy: string, devices: number, batch: number, options: object = {}): Promise<number[]> {
  const dir = mkdtempSync(join(tmpdir(), "fulgur-pipeline-gpu-"));
  dirs.push(dir);
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !RANK_VARS.test(k)));
  const args = [FIXTURE, "--out", dir, "--strategy", strategy, "--devices", String(devices), "--batch", String(batch), "--steps", "8",
    "--accelerator", "cuda", "--precision", "bf16-mixed", "--model", "small", "--options", JSON.stringify(options)];
  const child = spawn(process.execPath, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  child.stderr.on("data", (d) => (err += d));
  const code = await new Promise<number | null>((r) => child.on("close", r));
  expect(code, err).toBe(0);
  const ranks = Array.from({ length: devices }, (_, r) => JSON.parse(readFileSync(join(dir, `result-rank${r}.json`), "utf8")) as { losses: number[] });
  return ranks[0].losses.map((_, k) => ranks.reduce((s, x) => s + x.losses[k], 0) / devices);
}

describe.skipIf(!gpu)("pipeline on CUDA", () => {
  it("2 stages on one GPU through the host-staged group give single-device bf16 losses (small config)", async () => {
    const single = await run("single_device", 1, 8);
    const piped = await run("pipeline", 2, 8, { stages: 2, microBatches: 4, processGroupBackend: "host" });
    expect(piped).toHaveLength(8);
    piped.forEach((l, i) => expect(Math.abs(l - single[i]), `step ${i + 1}`).toBeLessThan(5e-3));
    expect(piped.at(-1)!).toBeLessThan(piped[0]);
  });
});

describe.skipIf(gpu)("pipeline on CUDA", () => {
  it("skipped: no GPU found", () => undefined);
});
