// Autocast's kept bf16 weight copies when parameters are views into one flat buffer (DESIGN.md,
// decision 5): training matches separate parameters bit for bit, and the cast cache still hits,
// because storage versions are kept per element range, not per storage.
import { describe, expect, it } from "vitest";
import { autocast, autocastCopyStats, cast, lowPrecisionCopyOf, noGrad, randint, resetAutocastCopyStats, scope, zeros } from "@fulgur/tensor";
import type { AutocastCopyStats, Tensor } from "@fulgur/tensor";
import { AdamW, GPT } from "../src/index";
import type { Module } from "../src/index";

const bits = (t: Tensor): number[] => Array.from(cast(t, "float64").toArray());

/**
 * Re-points every parameter of `model` into one flat float32 buffer, values kept, the way a
 * strategy's unit does (DDP's gradient buckets do the same for gradients). Returns the buffer.
 */
function flattenParameters(model: Module): Tensor {
  const named = model.namedParameters();
  const flat = zeros([named.reduce((n, [, p]) => n + p.numel, 0)]).untrack();
  let at = 0;
  noGrad(() => {
    for (const [name, p] of named) {
      const view = scope(() => flat.narrow(0, at, p.numel).view(p.shape));
      view.copy_(p);
      model.setParameter(name, view);
      p.dispose();
      at += p.numel;
    }
  });
  return flat;
}

const data = randint(0, 256, [2, 17], { seed: 4 });
const idx = data.slice(1, 0, 16).contiguous();
const targets = data.slice(1, 1, 17).contiguous();

function forwardLoss(model: GPT): number {
  return scope(() => autocast("bfloat16", () => model.loss(idx, targets)).item());
}

function train(flat: boolean): { model: GPT; buffer: Tensor | null; losses: number[]; stats: AutocastCopyStats[] } {
  const model = new GPT("tiny", { seed: 3 });
  const buffer = flat ? flattenParameters(model) : null;
  const opt = new AdamW(model.parameters(), { lr: 1e-2, weightDecay: 0.1 });
  resetAutocastCopyStats();
  const losses: number[] = [];
  const stats: AutocastCopyStats[] = [];
  for (let step = 0; step < 5; step++) {
    losses.push(
      scope(() => {
        const l = autocast("bfloat16", () => model.loss(idx, targets));
        l.backward();
        opt.step();
        opt.zeroGrad();
        return l.item();
      }),
    );
    stats.push(autocastCopyStats());
  }
  return { model, buffer, losses, stats };
}

describe("autocast weight copies of parameters in one flat buffer", () => {
  const separate = train(false);
  const flat = train(true);
  // Every Linear weight and bias of the blocks and the head (tiny: 2 blocks x 8, head 1).
  const castWeights = 17;

  it("trains bit for bit like separate parameters", () => {
    expect(flat.model.parameters().every((p) => p.storage === flat.buffer!.storage)).toBe(true);
    expect(flat.losses).toEqual(separate.losses);
    expect(flat.losses[4]).toBeLessThan(flat.losses[0]);
    const ps = separate.model.parameters();
    flat.model.parameters().forEach((p, i) => expect(bits(p)).toEqual(bits(ps[i])));
  });

  it("casts each weight in step 1 only and hits the cache from step 2 on", () => {
    for (const run of [separate, flat]) {
      expect(run.stats[0]).toEqual({ hits: 0, casts: castWeights });
      run.stats.forEach((s, step) => expect(s).toEqual({ hits: step * castWeights, casts: castWeights }));
    }
  });

  it("a write to one parameter re-casts it alone; a write to the whole buffer re-casts all", () => {
    const { model, buffer } = flat;
    forwardLoss(model);
    resetAutocastCopyStats();
    const qkv = model.getParameter("blocks.0.qkv.weight");
    noGrad(() => qkv.mul_(0.5));
    const afterOne = forwardLoss(model);
    expect(autocastCopyStats()).toEqual({ hits: castWeights - 1, casts: 1 });
    expect(bits(lowPrecisionCopyOf(qkv)!)).toEqual(bits(cast(qkv.detach(), "bfloat16")));
    resetAutocastCopyStats();
    noGrad(() => buffer!.mul_(1));
    expect(forwardLoss(model)).toBe(afterOne);
    expect(autocastCopyStats()).toEqual({ hits: 0, casts: castWeights });
  });
});
