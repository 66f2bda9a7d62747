// The golden end-to-end check (llm.c's test_gpt2): the anchor's GPT (../shared/bench/gpt_torch.py)
// run by PyTorch 2.11 in float64 from the same weights gives the logits, gradients and per-step
// AdamW losses stored in fixtures/ (made by scripts/fixtures/make_torch_fixtures.py). Fulgur's GPT
// loads those weights by their PyTorch names and must reproduce all of it.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { FullCheckpointIO } from "@fulgur/checkpoint-io";
import { AdamW, GPT } from "@fulgur/nn";
import { fromHost, scope } from "@fulgur/tensor";
import { relativeError } from "@fulgur/tensor/testing";

const fixture = (name: string): string => new URL(`./fixtures/${name}`, import.meta.url).pathname;
const golden = JSON.parse(readFileSync(fixture("gpt_golden.json"), "utf8"));
const c = golden.config;

async function goldenModel(): Promise<GPT> {
  const model = new GPT({ dModel: c.d, nLayers: c.layers, nHeads: c.heads, seqLen: c.seq, vocabSize: c.vocab }).to("float64");
  const { tensors } = await new FullCheckpointIO().load(fixture("gpt_golden_weights.safetensors"));
  model.loadStateDict(tensors);
  for (const t of Object.values(tensors)) t.dispose();
  return model;
}

function batch(): { x: ReturnType<typeof fromHost>; y: ReturnType<typeof fromHost> } {
  const [b, t1] = golden.idx_shape;
  const idx = Int32Array.from(golden.idx as number[]);
  const x = new Int32Array(b * (t1 - 1));
  const y = new Int32Array(b * (t1 - 1));
  for (let i = 0; i < b; i++) {
    x.set(idx.subarray(i * t1, i * t1 + t1 - 1), i * (t1 - 1));
    y.set(idx.subarray(i * t1 + 1, (i + 1) * t1), i * (t1 - 1));
  }
  return { x: fromHost(x, [b, t1 - 1], "int32").untrack(), y: fromHost(y, [b, t1 - 1], "int32").untrack() };
}

describe("GPT against PyTorch from the same weights (float64)", () => {
  it("parameter names and shapes load from the anchor's state_dict", async () => {
    const model = await goldenModel();
    expect(model.namedParameters().map(([n]) => n)).toContain("blocks.1.qkv.weight");
  });

  it("logits, loss and every gradient match", async () => {
    const model = await goldenModel();
    const { x, y } = batch();
    const loss = scope(() => {
      const logits = model.call(x);
      expect(logits.shape).toEqual([c.batch, c.seq, c.vocab]);
      const flat = logits.toArray();
      expect(relativeError(flat.slice(0, c.vocab), golden.logits_first_row)).toBeLessThan(1e-10);
      expect(flat.reduce((a, b) => a + b, 0)).toBeCloseTo(golden.logits_sum, 8);
      return model.loss(x, y);
    });
    expect(loss.item()).toBeCloseTo(golden.losses[0], 10);
    loss.backward();
    const { tensors: grads } = await new FullCheckpointIO().load(fixture("gpt_golden_grads.safetensors"));
    for (const [name, p] of model.namedParameters()) {
      expect(relativeError(p.grad!.toArray(), grads[name].toArray()), name).toBeLessThan(1e-9);
    }
  });

  it("three AdamW steps give PyTorch's losses", async () => {
    const model = await goldenModel();
    const { x, y } = batch();
    const h = golden.adamw;
    const opt = new AdamW(model.parameters(), { lr: h.lr, betas: h.betas, eps: h.eps, weightDecay: h.weight_decay });
    const losses: number[] = [];
    for (let step = 0; step < 3; step++) {
      scope(() => {
        const loss = model.loss(x, y);
        loss.backward();
        losses.push(loss.item());
      });
      opt.step();
      opt.zeroGrad();
    }
    losses.forEach((l, i) => expect(l).toBeCloseTo(golden.losses[i], 9));
  });
});
