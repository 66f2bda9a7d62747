// Training smoke test: GPT tiny memorises a fixed batch with AdamW, inside per-step scopes that
// leave no tensor behind.
import { describe, expect, it } from "vitest";
import { memoryStats, randint, scope } from "@fulgur/tensor";
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
