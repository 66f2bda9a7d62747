// The README's example: `npx tsx example/train.ts [dir]`. Trains a small GPT with the `ddp_hashed`
// strategy (one process: with no rank variables and devices: 1, DDP trains here), then resumes
// from the checkpoint it wrote, which is verified against its SHA-256 sidecar first.
import { join } from "node:path";
import { DataLoader, TextDataset, Trainer } from "@fulgur/trainer";
import { GPTLanguageModel } from "@fulgur/trainer/demos";
import { registerDdpHashed } from "./ddpHashed";

registerDdpHashed();

const dir = process.argv[2] ?? "runs/ddp-hashed";
const text = "Checkpoints are data, never code; and data can be checked. ".repeat(60);
const data = () => new DataLoader(TextDataset.fromText(text, { seqLen: 16 }), { batchSize: 4, shuffle: true, seed: 1, dropLast: true });
const model = () => new GPTLanguageModel({ config: { vocabSize: 256, seqLen: 16, dModel: 32, nLayers: 2, nHeads: 2 }, lr: 1e-2 });
const options = (maxSteps: number) =>
  ({ strategy: "ddp_hashed", strategyOptions: { verbose: false }, maxSteps, defaultRootDir: dir, logger: false, enableProgressBar: false }) as const;

const first = new Trainer(options(4));
await first.fit(model(), data());
const last = join(first.checkpointDir, "last.safetensors");
console.log(`step ${first.globalStep}: loss ${first.lastLoss.toFixed(3)}; saved ${last} and ${last}.sha256.json (${first.checkpointIO.name})`);

const second = new Trainer(options(8));
await second.fit(model(), data(), null, { ckptPath: last });
console.log(`resumed from step ${second.startStep} (checksum verified) to step ${second.globalStep}: loss ${second.lastLoss.toFixed(3)}`);
