// DDP on GPUs goes through the accelerator's NCCL group. One GPU gives a world of one: NCCL is
// initialised from the store, every bucket is all-reduced on the GPU, and the losses must equal
// single-device training on the same GPU. Several GPUs are covered by the benchmark runs.
import { describe, expect, it } from "vitest";
import { CudaAccelerator } from "@fulgur/accelerator-cuda";
import { type Callback, DataLoader, TextDataset, Trainer, type TrainingModule } from "@fulgur/trainer";
import { GPTLanguageModel } from "@fulgur/trainer/demos";
import "../../src/index";

const gpu = new CudaAccelerator().isAvailable();
const config = { dModel: 64, nLayers: 2, nHeads: 4, seqLen: 32, vocabSize: 256 } as const;

async function losses(strategy: string): Promise<number[]> {
  const out: number[] = [];
  const rec: Callback = { onTrainBatchEnd: (_t: Trainer, _m: TrainingModule, l: number) => void out.push(l) };
  const data = TextDataset.fromText("data parallel training on GPUs with NCCL. ".repeat(80), { seqLen: 32 });
  await new Trainer({
    accelerator: "cuda",
    devices: 1,
    strategy,
    precision: "bf16-mixed",
    maxSteps: 6,
    logEveryNSteps: 1,
    logger: false,
    enableProgressBar: false,
    enableCheckpointing: false,
    callbacks: [rec],
  }).fit(new GPTLanguageModel({ config, lr: 3e-3 }), new DataLoader(data, { batchSize: 8, shuffle: false }));
  return out;
}

describe.skipIf(!gpu)("ddp on CUDA (NCCL process group)", () => {
  it("trains with the same losses as single_device on the same GPU", async () => {
    const single = await losses("single_device");
    const ddp = await losses("ddp");
    expect(ddp).toHaveLength(6);
    ddp.forEach((l, i) => expect(l).toBeCloseTo(single[i], 4));
    expect(ddp.at(-1)!).toBeLessThan(ddp[0]);
  });
});

describe.skipIf(gpu)("ddp on CUDA", () => {
  it("skipped: no GPU found", () => undefined);
});
