// The reference GPT: shapes, the loss at initialisation, gradients (complete, finite, and equal to
// central finite differences in float64), determinism from a seed, activation checkpointing.
import { describe, expect, it } from "vitest";
import { noGrad, randint, scope, zeros } from "@fulgur/tensor";
import type { Tensor } from "@fulgur/tensor";
import { GPT, GPT_CONFIGS, gptFlopsPerStep } from "../src/index";

const tinyShort = { ...GPT_CONFIGS.tiny }; // T may be shorter than seqLen at call time

function batch(b: number, t: number, seed: number): { idx: Tensor; targets: Tensor } {
  const data = randint(0, 256, [b, t + 1], { seed });
  return { idx: data.slice(1, 0, t).contiguous(), targets: data.slice(1, 1, t + 1).contiguous() };
}

describe("GPT forward", () => {
  it("maps int32 [B, T] to logits [B, T, V]", () => {
    const m = new GPT("tiny", { seed: 0 });
    const { idx } = batch(2, 16, 1);
    expect(m.call(idx).shape).toEqual([2, 16, 256]);
  });

  it("starts with a loss near ln(256), the loss of a uniform guess", () => {
    const m = new GPT("tiny", { seed: 0 });
    const { idx, targets } = batch(4, 32, 2);
    const loss = m.loss(idx, targets).item();
    expect(Math.abs(loss - Math.log(256))).toBeLessThan(0.4);
  });

  it("rejects wrong ids, lengths and targets, naming what is allowed", () => {
    const m = new GPT("tiny", { seed: 0 });
    expect(() => m.call(zeros([1, 4]))).toThrow(/idx must be int32 \[batch, seq\]; got float32 \[1, 4\]/);
    const { idx } = batch(1, 65, 3);
    expect(() => m.call(idx)).toThrow(/sequence length 65 must be in \[1, 64\]/);
    const { idx: ok } = batch(1, 4, 3);
    expect(() => m.loss(ok, zeros([1, 4]))).toThrow(/targets must be int32/);
  });

  it("gives the same weights and loss from the same seed, different ones from another", () => {
    const { idx, targets } = batch(2, 16, 4);
    const a = new GPT(tinyShort, { seed: 7 });
    const b = new GPT(tinyShort, { seed: 7 });
    const c = new GPT(tinyShort, { seed: 8 });
    for (const [name, p] of a.namedParameters()) expect(b.getParameter(name).toArray(), name).toEqual(p.toArray());
    expect(c.getParameter("blocks.0.fc1.weight").toArray()).not.toEqual(a.getParameter("blocks.0.fc1.weight").toArray());
    expect(a.loss(idx, targets).item()).toBe(b.loss(idx, targets).item());
  });

  it("describes itself with the parameter count", () => {
    const text = new GPT("tiny", { seed: 0 }).describe();
    expect(text).toContain("dModel=64, nLayers=2, nHeads=4, seqLen=64, vocabSize=256");
    expect(text).toContain("136,960 parameters (0.14M)");
  });

  it("counts training FLOPs as the anchor does", () => {
    const tokens = 4 * 1024;
    expect(gptFlopsPerStep("1b", tokens)).toBe(6 * 938_905_600 * tokens + 12 * 16 * 2048 * 1024 * tokens);
  });
});

describe("GPT backward", () => {
  it("produces a finite, non-zero gradient for every parameter", () => {
    const m = new GPT("tiny", { seed: 0 });
    const { idx, targets } = batch(2, 16, 5);
    scope(() => m.loss(idx, targets).backward());
    for (const [name, p] of m.namedParameters()) {
      const g = p.grad;
      expect(g, name).not.toBeNull();
      expect(g!.shape).toEqual(p.shape);
      const v = g!.toArray();
      expect(v.every(Number.isFinite), name).toBe(true);
      expect(v.some((x) => x !== 0), name).toBe(true);
    }
  });

  it("matches central finite differences in float64", () => {
    const m = new GPT("tiny", { seed: 3 }).to("float64");
    const { idx, targets } = batch(1, 6, 6);
    const lossOf = (): number => noGrad(() => scope(() => m.loss(idx, targets).item()));
    m.loss(idx, targets).backward();
    const token = idx.toArray()[2];
    const probes: Array<[string, number]> = [
      ["emb.weight", token * 64 + 5],
      ["pos.weight", 3 * 64 + 1],
      ["blocks.0.qkv.weight", 17 * 64 + 9],
      ["blocks.0.qkv.bias", 150],
      ["blocks.1.ln1.weight", 12],
      ["blocks.1.fc2.bias", 40],
      ["lnf.bias", 7],
      ["head.weight", 100 * 64 + 3],
    ];
    const h = 1e-5;
    for (const [name, i] of probes) {
      const p = m.getParameter(name);
      const analytic = p.grad!.toArray()[i];
      const delta = zeros(p.shape, { dtype: "float64" });
      noGrad(() => delta.view([-1]).select(0, i).fill_(1));
      noGrad(() => p.add_(delta, h));
      const up = lossOf();
      noGrad(() => p.add_(delta, -2 * h));
      const down = lossOf();
      noGrad(() => p.add_(delta, h));
      const numeric = (up - down) / (2 * h);
      expect(Math.abs(analytic - numeric), `${name}[${i}]: ${analytic} vs ${numeric}`).toBeLessThan(1e-7 + 1e-5 * Math.abs(numeric));
    }
  });

  it("gives the same loss and gradients with activation checkpointing", () => {
    const { idx, targets } = batch(2, 12, 9);
    const plain = new GPT(tinyShort, { seed: 11 });
    const ac = new GPT({ ...tinyShort, activationCheckpointing: true }, { seed: 11 });
    const l1 = plain.loss(idx, targets);
    const l2 = ac.loss(idx, targets);
    expect(l2.item()).toBe(l1.item());
    l1.backward();
    l2.backward();
    for (const [name, p] of plain.namedParameters()) {
      const a = p.grad!.toArray();
      const b = ac.getParameter(name).grad!.toArray();
      for (let i = 0; i < a.length; i++) expect(Math.abs(a[i] - b[i]), name).toBeLessThan(1e-6);
    }
    expect(ac.describe()).toContain("activationCheckpointing");
  });

  it("is deterministic under dropout in eval mode and stochastic in training", () => {
    const { idx } = batch(1, 8, 10);
    const m = new GPT({ ...tinyShort, dropout: 0.2 }, { seed: 1 });
    const a = m.call(idx).toArray();
    const b = m.call(idx).toArray();
    expect(a).not.toEqual(b);
    m.eval();
    expect(m.call(idx).toArray()).toEqual(m.call(idx).toArray());
  });
});
