/**
 * The precisions and the one optimizer-step sequence: fp16 loss scaling skips overflowing steps,
 * clipping by norm equals nn's clipGradNorm, and sharded strategies' collectives make the overflow
 * decision and the norm global.
 */
import { describe, expect, it } from "vitest";
import { SGD, clipGradNorm } from "@fulgur/nn";
import { tensor } from "@fulgur/tensor";
import { GradScaler, createPrecision } from "../src";

describe("16-mixed loss scaling", () => {
  it("skips the step and halves the scale on overflow, then steps and zeroes gradients", async () => {
    const p = tensor([1, 2], { requiresGrad: true });
    const opt = new SGD([p], { lr: 0.5 });
    const precision = createPrecision("16-mixed");
    const scale0 = precision.stateDict().scale;
    p.grad = tensor([Infinity, 1]);
    expect(await precision.optimizerStep(opt, {})).toEqual({ stepped: false });
    expect(p.toArray()).toEqual([1, 2]);
    expect(p.grad).toBeNull();
    expect(precision.stateDict().scale).toBe(scale0 / 2);
    const s = precision.stateDict().scale;
    p.grad = tensor([s, 2 * s]);
    expect(await precision.optimizerStep(opt, {})).toEqual({ stepped: true });
    expect(p.toArray()).toEqual([0.5, 1]);
  });

  it("asks the strategy's collectives whether every rank was finite", async () => {
    const p = tensor([1, 2], { requiresGrad: true });
    const opt = new SGD([p], { lr: 0.5 });
    const precision = createPrecision("16-mixed");
    const s = precision.stateDict().scale;
    p.grad = tensor([s, s]);
    const seen: boolean[] = [];
    // Another rank overflowed: this rank must skip too, or the replicas would drift apart.
    const result = await precision.optimizerStep(opt, {
      collectives: { allFinite: async (local) => (seen.push(local), false), sumOverRanks: async (v) => v },
    });
    expect(seen).toEqual([true]);
    expect(result.stepped).toBe(false);
    expect(p.toArray()).toEqual([1, 2]);
  });

  it("grows the scale after growthInterval clean steps", () => {
    const s = new GradScaler({ initScale: 8, growthInterval: 2 });
    s.update(true);
    expect(s.scaleValue).toBe(8);
    s.update(true);
    expect(s.scaleValue).toBe(16);
    s.update(false);
    expect(s.scaleValue).toBe(8);
  });
});

describe("the optimizer step sequence", () => {
  it("clips by norm exactly as clipGradNorm, and reports the norm", async () => {
    const a = tensor([3, 4], { requiresGrad: true });
    const b = tensor([3, 4], { requiresGrad: true });
    a.grad = tensor([30, 40]);
    b.grad = tensor([30, 40]);
    const expectedNorm = clipGradNorm([b], 5);
    const result = await createPrecision("32-true").optimizerStep(new SGD([a], { lr: 1 }), { gradientClipVal: 5 });
    expect(result).toEqual({ stepped: true, gradNorm: expectedNorm });
    // a - clipped gradient; b's gradient was clipped by nn alone.
    expect(a.toArray()).toEqual([3 - b.grad!.toArray()[0], 4 - b.grad!.toArray()[1]]);
  });

  it("takes the norm over every rank's shard when given collectives", async () => {
    const p = tensor([0, 0], { requiresGrad: true });
    p.grad = tensor([3, 4]);
    // Another rank's shard holds [12] (squared 144): the global norm is sqrt(9 + 16 + 144) = 13.
    const result = await createPrecision("32-true").optimizerStep(new SGD([p], { lr: 1 }), {
      gradientClipVal: 1,
      collectives: { allFinite: async (v) => v, sumOverRanks: async (v) => v + 144 },
    });
    expect(result.gradNorm).toBe(13);
    expect(p.toArray()[0]).toBeCloseTo(-3 / 13, 6);
  });

  it("clips by value elementwise and steps over explicit gradients", async () => {
    const flat = tensor([0, 0, 0], { requiresGrad: true });
    const g = tensor([5, -5, 0.5]);
    flat.grad = g;
    await createPrecision("32-true").optimizerStep(new SGD([flat], { lr: 1 }), {
      gradientClipVal: 1,
      gradientClipAlgorithm: "value",
      gradients: [g],
    });
    expect(flat.toArray()).toEqual([-1, 1, -0.5]);
  });
});
