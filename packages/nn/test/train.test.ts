// Training smoke test: GPT tiny memorises a fixed batch with AdamW, inside per-step scopes that
// leave no tensor behind.
import { describe, expect, it } from "vitest";
import { autocast, cast, dropAutocastCopy, lowPrecisionCopyOf, memoryStats, randint, scope } from "@fulgur/tensor";
import { AdamW, GPT, clipGradNorm } from "../src/index";

describe("training smoke test", () => {
  it("GPT tiny halves its loss on a repeated batch in 30 AdamW steps (lr 1e-2)", () => {
    const model = new GPT("tiny", { seed: 0 });
    const opt = new AdamW(model.parameters(), { lr: 1e-2, weightDecay: 0 });
    const data = randint(0, 256, [4, 33], { seed: 1 });
    const idx = data.slice(1, 0, 32).contiguous();
    const targets = data.slice(1, 1, 33).contiguous();
    const losses: number[] = [];
    let liveAfterFirst = -1;
    for (let step = 0; step < 30; step++) {
      const loss = scope(() => {
        const l = model.loss(idx, targets);
        l.backward();
        clipGradNorm(model.parameters(), 1.0);
        opt.step();
        opt.zeroGrad();
        return l.item();
      });
      losses.push(loss);
      if (step === 0) liveAfterFirst = memoryStats("cpu").liveTensors;
    }
    expect(losses[29]).toBeLessThan(0.5 * losses[0]);
    // Every step frees what it made: the live tensor count is flat after the first step.
    expect(memoryStats("cpu").liveTensors).toBe(liveAfterFirst);
  });
});

describe("bf16 autocast training with the optimizer writing the weight copies", () => {
  function train(dropCopies: boolean): { losses: number[]; model: GPT } {
    const model = new GPT("tiny", { seed: 3 });
    const opt = new AdamW(model.parameters(), { lr: 1e-2, weightDecay: 0.1 });
    const data = randint(0, 256, [2, 17], { seed: 4 });
    const idx = data.slice(1, 0, 16).contiguous();
    const targets = data.slice(1, 1, 17).contiguous();
    const losses: number[] = [];
    for (let step = 0; step < 4; step++) {
      if (dropCopies) for (const p of model.parameters()) dropAutocastCopy(p);
      losses.push(
        scope(() => {
          const l = autocast("bfloat16", () => model.loss(idx, targets));
          l.backward();
          opt.step();
          opt.zeroGrad();
          return l.item();
        }),
      );
    }
    return { losses, model };
  }

  it("gives the same losses, bit for bit, as casting every weight afresh each step", () => {
    const kept = train(false);
    const fresh = train(true);
    expect(kept.losses).toEqual(fresh.losses);
    expect(kept.losses[3]).toBeLessThan(kept.losses[0]);
  });

  it("leaves each weight's copy equal to a cast of the updated weight after a step", () => {
    const { model } = train(false);
    let checked = 0;
    for (const p of model.parameters()) {
      const copy = lowPrecisionCopyOf(p);
      if (!copy) continue;
      expect(Array.from(cast(copy, "float64").toArray())).toEqual(Array.from(cast(cast(p.detach(), "bfloat16"), "float64").toArray()));
      checked++;
    }
    // Every Linear weight and bias of the blocks and the head (tiny: 2 blocks x 8, head 1).
    expect(checked).toBe(17);
  });
});
