// Learning-rate schedulers: values at known steps, per-group rates, and resuming from a state dict.
import { describe, expect, it } from "vitest";
import { tensor } from "@fulgur/tensor";
import { CosineWithWarmup, LambdaLR, SGD, StepLR, parameter } from "../src/index";

const opt = (lr = 1, lr2?: number): SGD => {
  const a = parameter(tensor([1]));
  const b = parameter(tensor([2]));
  return lr2 === undefined ? new SGD([a, b], { lr }) : new SGD([{ params: [a] }, { params: [b], lr: lr2 }], { lr });
};

/** The rate after `n` scheduler steps. */
function lrAfter(s: { step(): void; getLastLr(): number[] }, n: number): number[] {
  for (let i = 0; i < n; i++) s.step();
  return s.getLastLr();
}

describe("CosineWithWarmup", () => {
  it("warms up linearly from 0, follows the cosine to the floor and stays there", () => {
    const o = opt(2);
    const s = new CosineWithWarmup(o, { warmupSteps: 10, totalSteps: 110, minLrRatio: 0.1 });
    expect(s.getLastLr()).toEqual([0]);
    expect(o.paramGroups[0].lr).toBe(0);
    const at = (step: number): number => {
      const t = new CosineWithWarmup(opt(2), { warmupSteps: 10, totalSteps: 110, minLrRatio: 0.1 });
      return lrAfter(t, step)[0];
    };
    expect(at(5)).toBeCloseTo(1, 12);
    expect(at(10)).toBeCloseTo(2, 12);
    expect(at(35)).toBeCloseTo(2 * (0.1 + 0.9 * 0.5 * (1 + Math.cos(Math.PI / 4))), 12);
    expect(at(60)).toBeCloseTo(2 * 0.55, 12);
    expect(at(110)).toBeCloseTo(0.2, 12);
    expect(at(500)).toBeCloseTo(0.2, 12);
    expect(lrAfter(s, 60)).toEqual(o.paramGroups.map((g) => g.lr));
  });

  it("scales every group from its own base rate", () => {
    const o = opt(1, 0.1);
    const s = new CosineWithWarmup(o, { warmupSteps: 4, totalSteps: 8 });
    expect(lrAfter(s, 2)).toEqual([0.5, 0.05]);
    expect(lrAfter(s, 6)[1]).toBeCloseTo(0, 15);
  });

  it("rejects inconsistent options naming the field", () => {
    expect(() => new CosineWithWarmup(opt(), { warmupSteps: 10, totalSteps: 5 })).toThrow(/totalSteps \(5\) must be >= warmupSteps \(10\)/);
    expect(() => new CosineWithWarmup(opt(), { warmupSteps: -1, totalSteps: 5 })).toThrow(/warmupSteps must be a non-negative integer; got -1/);
    expect(() => new CosineWithWarmup(opt(), { warmupSteps: 1, totalSteps: 5, minLrRatio: 2 })).toThrow(/minLrRatio must be a number in \[0, 1\]; got 2/);
  });

  it("resumes from its state dict with exactly the rates of an uninterrupted run", () => {
    const o1 = opt(3);
    const s1 = new CosineWithWarmup(o1, { warmupSteps: 5, totalSteps: 50, minLrRatio: 0.05 });
    lrAfter(s1, 17);
    const saved = JSON.parse(JSON.stringify(s1.stateDict()));
    const o2 = opt(3);
    const s2 = new CosineWithWarmup(o2, { warmupSteps: 5, totalSteps: 50, minLrRatio: 0.05 });
    s2.loadStateDict(saved);
    expect(s2.lastEpoch).toBe(17);
    for (let i = 0; i < 10; i++) expect(lrAfter(s2, 1)).toEqual(lrAfter(s1, 1));
  });
});

describe("StepLR and LambdaLR", () => {
  it("StepLR multiplies by gamma every stepSize steps", () => {
    const s = new StepLR(opt(1), { stepSize: 3, gamma: 0.5 });
    const rates = [s.getLastLr()[0], ...Array.from({ length: 7 }, () => lrAfter(s, 1)[0])];
    expect(rates).toEqual([1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]);
  });

  it("LambdaLR applies one function or one per group", () => {
    const s = new LambdaLR(opt(2, 4), [(e) => 1 / (e + 1), (e) => 0.5 ** e]);
    expect(s.getLastLr()).toEqual([2, 4]);
    expect(lrAfter(s, 3)).toEqual([0.5, 0.5]);
    expect(() => new LambdaLR(opt(1, 1), [(e) => e])).toThrow(/2 functions \(one per param group\)/);
  });

  it("a scheduler created to resume needs the initial rates", () => {
    expect(() => new StepLR(opt(1), { stepSize: 1, lastEpoch: 4 })).toThrow(/has no initialLr/);
    const o = opt(1);
    new StepLR(o, { stepSize: 2, gamma: 0.1 });
    const resumed = new StepLR(o, { stepSize: 2, gamma: 0.1, lastEpoch: 3 });
    expect(resumed.lastEpoch).toBe(4);
    expect(resumed.getLastLr()[0]).toBeCloseTo(0.01, 15);
  });
});
