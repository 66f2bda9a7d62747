/**
 * `fulgur plan` and the "auto" rule over the real strategy packages (issue 15), on described
 * machines and models built on `meta` (a 70B plan allocates nothing): the table's figures are the
 * strategies' own estimates, bad flags are refused naming the flag, the value and what is allowed,
 * and "auto" picks DDP, FSDP or offload as docs/guide/choosing-a-strategy.md says.
 */
import { readFileSync, statfsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { StrategyRegistry, estimatesMemory } from "@fulgur/core";
import { GPT, GPT_CONFIGS, type GPTConfig } from "@fulgur/nn";
import { withDevice } from "@fulgur/tensor";
import { chooseStrategy, describeMachine, loadStrategyPackage, planMemory } from "@fulgur/trainer";
import { cli, tempDir, tinyConfig, writeCorpus, writeJson } from "./helpers";

const GIB = 2 ** 30;
const meta = (config: GPTConfig): GPT => withDevice("meta", () => new GPT(config));
/** 0.10B: 12 layers of width 640 and the 32k vocabulary. */
const GPT_100M: GPTConfig = { dModel: 640, nLayers: 12, nHeads: 10, seqLen: 1024, vocabSize: 32000 };
/** 6.71B: DESIGN.md's `7b`. */
const GPT_7B: GPTConfig = { dModel: 4096, nLayers: 32, nHeads: 32, seqLen: 1024, vocabSize: 32000 };
/** 69.8B: width 8192, 86 layers. */
const GPT_70B: GPTConfig = { dModel: 8192, nLayers: 86, nHeads: 64, seqLen: 1024, vocabSize: 32000 };

async function autoOn(config: GPTConfig, hostMemory: string, microBatch = 1, diskSpace?: string) {
  const machine = describeMachine({ devicesPerNode: 8, nodes: 1 }, { gpuMemory: "80GiB", hostMemory, diskSpace });
  const plan = await planMemory({ module: meta(config), machine, precision: "bf16-mixed", microBatch });
  return { plan, choice: chooseStrategy(plan) };
}

describe('"auto" on described machines (8 × 80 GiB)', () => {
  it("0.1B: DDP, the whole training state fits one GPU", async () => {
    const { plan, choice } = await autoOn(GPT_100M, "512GiB", 4);
    expect(plan.parameters / 1e9).toBeCloseTo(0.1, 1);
    expect(choice.strategy).toBe("ddp");
    expect(choice.fits).toBe(true);
    expect(choice.reason).toMatch(/^strategy "auto" picked ddp for 8 device\(s\), micro-batch 4: ddp needs [\d.]+ GiB per GPU, which fits \(72\.0 GiB usable of 80\.0 GiB per GPU/);
  });

  it("7B: FSDP full shard, because DDP needs more than a GPU", async () => {
    const { plan, choice } = await autoOn(GPT_7B, "512GiB");
    const ddp = plan.rows.find((r) => r.strategy === "ddp")!;
    // fp32 weights, gradients and AdamW state: 16 bytes a parameter, over 100 GiB on one GPU.
    expect(ddp.perDeviceBytes).toBeGreaterThan(16 * plan.parameters);
    expect(ddp.fits).toBe(false);
    expect(choice.strategy).toBe("fsdp");
    expect(choice.fits).toBe(true);
    expect(choice.reason).toContain(`ddp needs ${(ddp.perDeviceBytes / GIB).toFixed(1)} GiB per GPU (GPU ${(ddp.perDeviceBytes / GIB).toFixed(1)} GiB > 72.0 GiB usable); fsdp needs`);
  });

  it("70B with 1 TiB of host: offload; FSDP alone needs more than a GPU, and the host is named when it is short too", async () => {
    const { plan, choice } = await autoOn(GPT_70B, "1TiB");
    const fsdp = plan.rows.find((r) => r.strategy === "fsdp")!;
    const offload = plan.rows.find((r) => r.strategy === "fsdp_cpu_offload")!;
    expect(fsdp.fits).toBe(false);
    expect(offload.perDeviceBytes).toBeLessThan(plan.usableGpuBytes);
    expect(choice.strategy).toBe("fsdp_cpu_offload");
    // fp32 slices, gradient slices and AdamW state on the host: 16 bytes a parameter, 1.02 TiB for
    // 69.8B, more than 90% of 1 TiB; the plan says so rather than promising it fits.
    expect(offload.hostBytesPerNode).toBeCloseTo(16 * plan.parameters, -8);
    expect(choice.fits).toBe(false);
    expect(choice.reason).toContain("but nothing fits");
    expect(offload.problems).toEqual([`host 1.0 TiB > 921.6 GiB usable`]);
    // With 2 TiB of host the same offload fits.
    expect((await autoOn(GPT_70B, "2TiB")).choice).toMatchObject({ strategy: "fsdp_cpu_offload", fits: true });
    // NVMe offload is planned, but with no disk described it never fits.
    const nvme = plan.rows.find((r) => r.strategy === "deepspeed_stage_3_offload_nvme")!;
    expect(nvme.fits).toBe(false);
    expect(nvme.problems).toEqual([`disk ${(nvme.diskBytesPerNode / 2 ** 30).toFixed(1)} GiB per node, and no disk was described (--disk-space)`]);
  });

  it("70B with 1 TiB of host and 8 TB of disk: NVMe offload, the optimizer state and slices on disk", async () => {
    const { plan, choice } = await autoOn(GPT_70B, "1TiB", 1, "8TB");
    const nvme = plan.rows.find((r) => r.strategy === "deepspeed_stage_3_offload_nvme")!;
    // On disk per rank: fp32 slices (4 bytes a parameter) and AdamW state (8), over the 8 ranks.
    expect(nvme.diskBytesPerNode).toBeCloseTo(12 * plan.parameters, -8);
    // The host keeps the gradient slices (4 bytes a parameter) and, in the optimizer step, three
    // neighbouring pieces of at most sub_group_size (1e9) elements of slices and state (12 bytes an
    // element) on each of the 8 ranks: the one updated, the next being read, the last being written.
    expect(nvme.hostBytesPerNode).toBeGreaterThan(4 * plan.parameters + 8 * 2 * 1e9 * 12);
    expect(nvme.hostBytesPerNode).toBeLessThanOrEqual(4 * plan.parameters + 8 * 3 * 1e9 * 12);
    expect(choice).toMatchObject({ strategy: "deepspeed_stage_3_offload_nvme", fits: true });
    expect(choice.reason).toContain("deepspeed_stage_3_offload_nvme needs");
    expect(choice.reason).toContain("disk per node, which fits");
    // Too little disk: named, and nothing fits.
    const small = await autoOn(GPT_70B, "1TiB", 1, "500GB");
    expect(small.plan.rows.find((r) => r.strategy === "deepspeed_stage_3_offload_nvme")!.problems[0]).toMatch(/^disk [\d.]+ GiB > 419\.1 GiB usable$/);
    expect(small.choice.fits).toBe(false);
  });

  it("no disk described: the NVMe rows are checked against the free space under their nvme_path", async () => {
    const machine = describeMachine({ devicesPerNode: 8, nodes: 1 }, { gpuMemory: "80GiB", hostMemory: "1TiB" });
    const dir = tempDir();
    const { bavail, bsize } = statfsSync(dir);
    const usable = Math.floor(Number(bavail) * Number(bsize) * 0.9);
    const candidates = [{ strategy: "deepspeed_stage_3_offload_nvme", options: { nvmePath: dir } }];
    // 70B: about 840 GB of slices and state on disk, more than any test machine's free space.
    const big = await planMemory({ module: meta(GPT_70B), machine, precision: "bf16-mixed", microBatch: 1, candidates });
    const [row] = big.rows;
    expect(row.diskBytesPerNode).toBeGreaterThan(usable);
    expect(row.problems).toEqual([expect.stringMatching(new RegExp(`^disk [\\d.]+ GiB > [\\d.]+ [GTM]iB usable of [\\d.]+ [GTM]iB free under ${dir.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}$`))]);
    // The tiny model's few MB fit where the 70B's did not.
    const tiny = await planMemory({ module: meta(GPT_CONFIGS.tiny), machine, precision: "bf16-mixed", microBatch: 1, candidates });
    expect(tiny.rows[0].diskBytesPerNode).toBeLessThan(usable);
    expect(tiny.rows[0]).toMatchObject({ fits: true, problems: [] });
  });

  it("one device: single_device when it fits, else offload", async () => {
    const one = (gpuMemory: string) => describeMachine({ devicesPerNode: 1, nodes: 1 }, { gpuMemory, hostMemory: "512GiB" });
    const module = meta(GPT_CONFIGS["1b"]);
    const big = await planMemory({ module, machine: one("141GiB"), precision: "bf16-mixed", microBatch: 4 });
    expect(chooseStrategy(big).strategy).toBe("single_device");
    const small = await planMemory({ module, machine: one("16GiB"), precision: "bf16-mixed", microBatch: 4 });
    expect(chooseStrategy(small)).toMatchObject({ strategy: "fsdp_cpu_offload", fits: true });
  });
});

describe("fulgur plan", () => {
  it("plans a pipeline, whose biggest micro-batch is a multiple of its micro-batch count", async () => {
    const r = await cli("plan", "--config", "1b", "--devices", "4", "--gpu-memory", "80GiB", "--host-memory", "512GiB", "--strategy", "pipeline", "--micro-batch", "8", "--json");
    expect(r.code).toBe(0);
    const row = (JSON.parse(r.out) as { rows: { strategy: string; fits: boolean; maxMicroBatch: number; error?: string }[] }).rows[0];
    expect(row.error).toBeUndefined();
    expect(row.fits).toBe(true);
    // Four stages, four micro-batches by default: only batches that split into four are searched.
    expect(row.maxMicroBatch).toBeGreaterThan(8);
    expect(row.maxMicroBatch % 4).toBe(0);
  });

  it("prints a row per strategy with each strategy's own estimate, and what auto picks", async () => {
    const r = await cli("plan", "--config", "1b", "--devices", "8", "--gpu-memory", "80GiB", "--host-memory", "512GiB");
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(r.out).toContain("Machine: 1 node(s) × 8 GPU(s) of 80.0 GiB, 512.0 GiB host memory per node (GPU memory described; host memory described)");
    expect(r.out).toContain("Usable: 72.0 GiB per GPU, 460.8 GiB host per node (10% kept");
    await loadStrategyPackage("fsdp");
    const fsdp = StrategyRegistry.create("fsdp");
    if (!estimatesMemory(fsdp)) throw new Error("fsdp does not estimate");
    const e = fsdp.estimateMemory({ module: meta(GPT_CONFIGS["1b"]), precision: "bf16-mixed", microBatch: 4, worldSize: 8 });
    expect(r.out).toMatch(new RegExp(`\\n  fsdp +yes +${(e.perDevice.total / GIB).toFixed(1)} GiB +0 B +0 B +\\d+ +${e.peak!.where}\\n`));
    for (const s of ["ddp", "fsdp_shard_grad_op", "deepspeed_stage_2", "deepspeed_stage_3", "fsdp_cpu_offload", "deepspeed_stage_3_offload"]) expect(r.out).toMatch(new RegExp(`\\n  ${s} +yes `));
    expect(r.out).toContain('strategy "auto" picked ddp for 8 device(s), micro-batch 4');
  });

  it("--json: the rows with their breakdowns; --strategy plans only those; --size sets the model and micro-batch", async () => {
    const r = await cli("plan", "--size", "4096,32,32,1024,1", "--devices", "8", "--gpu-memory", "80GiB", "--host-memory", "1TiB", "--strategy", "ddp", "--strategy", "fsdp", "--json");
    expect(r.code).toBe(0);
    const plan = JSON.parse(r.out) as { microBatch: number; parameters: number; rows: { strategy: string; fits: boolean; perDevice: { total: number }; maxMicroBatch: number }[]; auto: unknown };
    expect(plan.microBatch).toBe(1);
    expect(plan.parameters).toBe(meta(GPT_7B).parameters().reduce((n, p) => n + p.numel, 0));
    expect(plan.rows.map((x) => [x.strategy, x.fits])).toEqual([["ddp", false], ["fsdp", true]]);
    expect(plan.rows[1].maxMicroBatch).toBeGreaterThan(1);
    expect(plan.auto).toBeNull();
  });

  it.each([
    [["--gpu-memory", "80GB!"], "error: option '--gpu-memory <size>' argument '80GB!' is invalid. expected a positive size such as \"80GiB\""],
    [["--host-memory", "0"], "error: option '--host-memory <size>' argument '0' is invalid. expected a positive size"],
    [["--devices", "0"], "error: option '--devices <n>' argument '0' is invalid. expected a positive integer (GPUs per node)"],
    [["--nodes", "two"], "error: option '--nodes <n>' argument 'two' is invalid. expected a positive integer (nodes)"],
    [["--size", "4096,32,30,1024"], "error: option '--size <d,L,H,T[,B]>' argument '4096,32,30,1024' is invalid. expected heads (30) dividing the width (4096)"],
    [["--precision", "fp8"], "error: option '--precision <p>' argument 'fp8' is invalid. expected one of"],
    [["--config", "huge"], "error: option '--config <name>' argument 'huge' is invalid. expected one of tiny, small, 1b"],
  ])("refuses %j naming the flag, the value and what is allowed", async (args, message) => {
    const r = await cli("plan", ...args, "--gpu-memory", args[0] === "--gpu-memory" ? args[1] : "80GiB");
    expect(r.code).toBe(2);
    expect(r.err).toContain(message);
  });
});

describe("docs/guide/choosing-a-strategy.md", () => {
  const guide = readFileSync(join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "docs", "guide", "choosing-a-strategy.md"), "utf8");
  const shown = [...guide.matchAll(/```text\n\$ fulgur (plan [^\n]*)\n([\s\S]*?)```/g)];
  it("shows five plans", () => expect(shown).toHaveLength(5));
  for (const [, command, output] of shown) {
    it(`shows \`fulgur ${command}\` as it prints`, async () => {
      const r = await cli(...command.split(" "));
      expect(r.code).toBe(0);
      expect(r.out).toBe(output);
    });
  }
});

describe("fulgur fit checks the plan before launch", () => {
  it("refuses a strategy that cannot fit the machine of the config, with the table; --ignore-memory-plan trains", async () => {
    const dir = tempDir();
    writeCorpus(dir);
    const config = tinyConfig({ trainer: { maxSteps: 1, enableProgressBar: false, enableCheckpointing: false, defaultRootDir: "out", accelerator: "cpu", strategy: "single_device", machine: { gpuMemory: "64KiB", hostMemory: "1GiB" } } });
    const file = writeJson(`${dir}/small-machine.json`, config);
    const refused = await cli("fit", "--config", file);
    expect(refused.code).toBe(1);
    expect(refused.err).toMatch(/memory plan: single_device does not fit at micro-batch 4 \(GPU [\d.]+ KiB > 57\.6 KiB usable\); nothing was launched/);
    expect(refused.err).toMatch(/\n  single_device +no /);
    expect(refused.out).toBe("");
    const tried = await cli("fit", "--config", file, "--ignore-memory-plan");
    expect(tried.code).toBe(0);
    expect(tried.out).toMatch(/^fit done: 1 steps/);
  });
});
