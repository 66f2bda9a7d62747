// FSDP on a GPU. At world 1 the units are resident (views of one flat buffer per unit) and must
// train exactly as single_device; at world 2 two processes share the one GPU through the
// host-staged process group (DESIGN.md decision 16) and must give single-device bf16 losses on the
// `small` config; a block offloaded per unit trains as the same job with it on the GPU. Speed
// across GPUs is the benchmark sweep's.
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

/** Where each unit's parameters and optimizer state live (the fixture reports it with --unit-options). */
type Placement = { units: { name: string; parameters: string; optimizerState: string }[] };
let lastPlacement: Placement | null = null;

/** The job's per-step losses (the ranks' mean); `extra`: more fixture flags. Rank 0's placement lands in `lastPlacement`. */
async function run(strategy: string, devices: number, batch: number, options: object = {}, extra: readonly string[] = []): Promise<number[]> {
  const dir = mkdtempSync(join(tmpdir(), "fulgur-fsdp-gpu-"));
  dirs.push(dir);
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !RANK_VARS.test(k)));
  const args = [FIXTURE, "--out", dir, "--strategy", strategy, "--devices", String(devices), "--batch", String(batch), "--steps", "8",
    "--accelerator", "cuda", "--precision", "bf16-mixed", "--model", "small", "--options", JSON.stringify(options), ...extra];
  const child = spawn(process.execPath, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  let err = "";
  child.stderr.on("data", (d) => (err += d));
  const code = await new Promise<number | null>((r) => child.on("close", r));
  expect(code, err).toBe(0);
  const ranks = Array.from({ length: devices }, (_, r) => JSON.parse(readFileSync(join(dir, `result-rank${r}.json`), "utf8")) as { losses: number[]; placement: Placement | null });
  lastPlacement = ranks[0].placement;
  return ranks[0].losses.map((_, k) => ranks.reduce((s, x) => s + x.losses[k], 0) / devices);
}

describe.skipIf(!gpu)("fsdp on CUDA", () => {
  it("at world 1 trains as single_device (resident units), within the GPU's run-to-run differences", async () => {
    const single = await run("single_device", 1, 8);
    const again = await run("single_device", 1, 8);
    const fsdp = await run("fsdp", 1, 8);
    const noise = Math.max(...single.map((l, i) => Math.abs(l - again[i])));
    console.log(`single vs single: max ${noise}; fsdp vs single: ${fsdp.map((l, i) => Math.abs(l - single[i]).toExponential(1)).join(" ")}`);
    fsdp.forEach((l, i) => expect(Math.abs(l - single[i]), `step ${i + 1}`).toBeLessThan(Math.max(1e-3, 2 * noise)));
  });

  it("at world 2 on one GPU through the host-staged group gives single-device bf16 losses (small config)", async () => {
    const single = await run("single_device", 1, 8);
    const fsdp = await run("fsdp", 2, 4, { processGroupBackend: "host" });
    expect(fsdp).toHaveLength(8);
    fsdp.forEach((l, i) => expect(Math.abs(l - single[i]), `step ${i + 1}`).toBeLessThan(5e-3));
    expect(fsdp.at(-1)!).toBeLessThan(fsdp[0]);
  });

  it("at world 1 with one block offloaded per unit and computing in bf16 (its own paramDtype): the losses of the same job with the block on the GPU", async () => {
    // Block 2: with one unit prefetched its slice goes up while block 0 computes, ahead of its cast
    // in block 1's pre-forward hook ([Note: upload one unit ahead] in @fulgur/sharding).
    const bf16 = { mixedPrecision: { paramDtype: "bfloat16" } };
    const onGpu = await run("fsdp", 1, 8, {}, ["--unit-options", JSON.stringify({ 2: bf16 })]);
    expect(lastPlacement!.units.map((u) => [u.name, u.parameters, u.optimizerState])).toEqual([
      ["model.blocks.0", "device", "device"],
      ["model.blocks.1", "device", "device"],
      ["model.blocks.2", "device", "device"],
      ["model.blocks.3", "device", "device"],
      ["", "device", "device"],
    ]);
    const offloaded = await run("fsdp", 1, 8, {}, ["--unit-options", JSON.stringify({ 2: { ...bf16, cpuOffload: true } })]);
    // Only block 2's slices and AdamW state live in pinned host memory, and it is uploaded for each gather.
    expect(lastPlacement!.units.map((u) => [u.name, u.parameters, u.optimizerState])).toEqual([
      ["model.blocks.0", "device", "device"],
      ["model.blocks.1", "device", "device"],
      ["model.blocks.2", "host", "host"],
      ["model.blocks.3", "device", "device"],
      ["", "device", "device"],
    ]);
    expect(offloaded).toHaveLength(8);
    // The same arithmetic but for the block's AdamW step (the CPU optimizer's against the GPU's, both fp32).
    offloaded.forEach((l, i) => expect(Math.abs(l - onGpu[i]), `step ${i + 1}: ${l} vs ${onGpu[i]}`).toBeLessThan(5e-3));
    expect(offloaded.at(-1)!).toBeLessThan(offloaded[0]);
  });
});

describe.skipIf(gpu)("fsdp on CUDA", () => {
  it("skipped: no GPU found", () => undefined);
});
