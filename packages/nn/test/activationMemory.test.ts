/**
 * The GPT's activation formula ([Note: the GPT's saved tensors]) against what the CPU backend
 * measures: the bytes a forward leaves saved for backward, and the highest bytes of a backward
 * whose gradients already exist (as from the second micro-batch of an accumulation window).
 */
import { autocast, deferWeightGradients, memoryStats, randint, resetPeakMemory, scope, withDevice } from "@fulgur/tensor";
import { describe, expect, it } from "vitest";
import { GPT, type GPTConfig, activationProfile, autocastCopyElements, gptActivationProfile } from "../src";

/** The bytes a split backward's input pass leaves for the weight pass (gradients already there). */
function measureDeferred(config: GPTConfig, batch: number, bf16: boolean): number {
  const model = new GPT(config, { seed: 0 });
  const idx = randint(0, config.vocabSize, [batch, config.seqLen], { dtype: "int32" });
  const targets = randint(0, config.vocabSize, [batch, config.seqLen], { dtype: "int32" });
  let deferred = 0;
  for (let pass = 0; pass < 2; pass++) {
    const base = memoryStats("cpu").liveBytes;
    const loss = scope(() => (bf16 ? autocast("bfloat16", () => model.loss(idx, targets)) : model.loss(idx, targets)).keep());
    const weightPass = deferWeightGradients(() => scope(() => loss.backward()));
    loss.dispose();
    deferred = memoryStats("cpu").liveBytes - base;
    weightPass.run();
    // The weight pass frees all of it, adding into the gradients the first pass made.
    if (pass === 1) expect(memoryStats("cpu").liveBytes).toBe(base);
  }
  return deferred;
}

function measure(config: GPTConfig, batch: number, bf16: boolean): { saved: number; backwardPeak: number } {
  const model = new GPT(config, { seed: 0 });
  const idx = randint(0, config.vocabSize, [batch, config.seqLen], { dtype: "int32" });
  const targets = randint(0, config.vocabSize, [batch, config.seqLen], { dtype: "int32" });
  const run = <T>(fn: () => T): T => (bf16 ? autocast("bfloat16", fn) : fn());
  let out = { saved: 0, backwardPeak: 0 };
  // Twice: the first pass makes the gradients (and autocast's weight copies); the second is measured.
  for (let pass = 0; pass < 2; pass++) {
    const base = memoryStats("cpu").liveBytes;
    const loss = scope(() => run(() => model.loss(idx, targets)).keep());
    const saved = memoryStats("cpu").liveBytes - base;
    resetPeakMemory("cpu");
    scope(() => loss.backward());
    loss.dispose();
    out = { saved, backwardPeak: memoryStats("cpu").peakBytes - base };
  }
  return out;
}

describe("the GPT's activation formula", () => {
  const cases: { config: GPTConfig; batch: number; bf16: boolean }[] = [
    { config: { vocabSize: 256, seqLen: 16, dModel: 32, nLayers: 3, nHeads: 2 }, batch: 6, bf16: false },
    { config: { vocabSize: 128, seqLen: 32, dModel: 64, nLayers: 2, nHeads: 4 }, batch: 3, bf16: false },
    { config: { vocabSize: 256, seqLen: 16, dModel: 32, nLayers: 3, nHeads: 2 }, batch: 4, bf16: true },
    { config: { vocabSize: 256, seqLen: 16, dModel: 32, nLayers: 3, nHeads: 2, activationCheckpointing: true }, batch: 6, bf16: false },
  ];
  for (const c of cases) {
    it(`saved and backward-peak bytes within 3% of the CPU's (${JSON.stringify(c.config)}, batch ${c.batch}${c.bf16 ? ", bf16 autocast" : ""})`, () => {
      const measured = measure(c.config, c.batch, c.bf16);
      const meta = withDevice("meta", () => new GPT(c.config));
      const profile = gptActivationProfile(meta, { microBatch: c.batch, computeDtype: c.bf16 ? "bfloat16" : null });
      const segments = profile.segments;
      // The measured forward does not count the inputs and targets (made before it): 8 bytes a token.
      const saved = segments.reduce((s, x) => s + x.savedBytes, 0) - c.batch * c.config.seqLen * 8;
      expect(Math.abs(saved / measured.saved - 1), `formula ${saved}, measured ${measured.saved}`).toBeLessThan(0.03);
      // Backward holds everything saved plus, at its highest, one segment's transient (the logits' gradient first).
      let live = saved;
      let peak = 0;
      for (let i = segments.length - 1; i >= 0; i--) {
        peak = Math.max(peak, live + segments[i].backwardTransientBytes);
        live -= segments[i].savedBytes;
      }
      expect(Math.abs(peak / measured.backwardPeak - 1), `formula ${peak}, measured ${measured.backwardPeak}`).toBeLessThan(0.03);
    });
  }

  for (const c of cases.slice(0, 3)) {
    it(`what a split backward leaves for its weight pass within 3% of the CPU's (${JSON.stringify(c.config)}, batch ${c.batch}${c.bf16 ? ", bf16 autocast" : ""})`, () => {
      const measured = measureDeferred(c.config, c.batch, c.bf16);
      const meta = withDevice("meta", () => new GPT(c.config));
      const profile = gptActivationProfile(meta, { microBatch: c.batch, computeDtype: c.bf16 ? "bfloat16" : null });
      const deferred = profile.segments.reduce((s, x) => s + x.deferredBytes!, 0);
      // More than the forward saved: every op with weights keeps its output gradient too.
      expect(deferred).toBeGreaterThan(profile.segments.reduce((s, x) => s + x.savedBytes, 0));
      expect(Math.abs(deferred / measured - 1), `formula ${deferred}, measured ${measured}`).toBeLessThan(0.03);
    });
  }

  it("finds the GPT inside a training module, and knows no other model", () => {
    const gpt = withDevice("meta", () => new GPT("tiny"));
    const profile = activationProfile(gpt, { microBatch: 2 });
    expect(profile?.segments.map((s) => s.name)).toEqual(["embeddings", "block 0", "block 1", "head and loss"]);
    expect(profile?.segments[1].modules).toEqual(["blocks.0"]);
    expect(activationProfile(gpt.blocks.get(0), { microBatch: 2 })).toBeNull();
    expect(() => activationProfile(gpt, { microBatch: 0 })).toThrow("activation profile: microBatch must be a positive integer; got 0");
    expect(() => activationProfile(gpt, { microBatch: 1, seqLen: 65 })).toThrow("seqLen must be an integer in [1, 64]");
  });

  it("autocast copies: the Linear layers' weights and biases, not embeddings or norms", () => {
    const gpt = withDevice("meta", () => new GPT("tiny"));
    const d = 64;
    expect(autocastCopyElements(gpt)).toBe(2 * (12 * d * d + 9 * d) + d * 256);
    expect(autocastCopyElements(gpt, "blocks.1")).toBe(12 * d * d + 9 * d);
  });
});
