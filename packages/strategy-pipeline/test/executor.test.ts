// The executor on one rank (a one-stage pipeline: no messages), in one process: under ZB-H1, B runs
// the input pass of a split backward and W the weight gradients it left, so the parameters' gradients
// arrive in W, not in B, and equal those of 1F1B's ordinary backwards bit for bit.
import type { ProcessGroup } from "@fulgur/core";
import { GPT, GPT_CONFIGS } from "@fulgur/nn";
import { type Tensor, fromHost, scope } from "@fulgur/tensor";
import { describe, expect, it } from "vitest";
import { runActions } from "../src/executor";
import { buildSchedule } from "../src/schedules";
import { StagedModel } from "../src/stagedModel";

const SEQ = 16;
const MICRO_BATCHES = 3;

function microBatch(k: number): [Tensor, Tensor] {
  const { vocabSize } = GPT_CONFIGS.tiny;
  const idx = Int32Array.from({ length: 2 * SEQ }, (_, i) => (i * 11 + 2 + 5 * k) % vocabSize);
  const targets = Int32Array.from({ length: 2 * SEQ }, (_, i) => (i * 7 + 1 + 3 * k) % vocabSize);
  return [fromHost(idx, [2, SEQ], "int32"), fromHost(targets, [2, SEQ], "int32")];
}

// A single stage never sends or receives.
const NO_GROUP = new Proxy({}, { get: (_, key) => () => { throw new Error(`a one-stage pipeline used its group (${String(key)})`); } }) as ProcessGroup;

function run(schedule: "1f1b" | "zb-h1") {
  return scope(() => {
    const model = new GPT(GPT_CONFIGS.tiny, { seed: 9 });
    const staged = new StagedModel(model, { blocks: null, splitPoints: null, balance: "blocks", stages: 1 });
    staged.install([0]);
    // What happened, in order: B's backward starting and ending, and each parameter's hook.
    const events: string[] = [];
    for (const [name, p] of model.namedParameters()) p.registerPostAccumulateGradHook(() => events.push(name));
    const batches = Array.from({ length: MICRO_BATCHES }, (_, k) => microBatch(k));
    const { timeline } = runActions({
      schedule: buildSchedule(schedule, { stages: 1, microBatches: MICRO_BATCHES }),
      rank: 0,
      group: NO_GROUP,
      model: staged,
      device: "cpu",
      microBatches: batches,
      trainingStep: (mb) => model.loss(...(mb as [Tensor, Tensor])),
      lossScale: 1 / MICRO_BATCHES,
      backwardLoss: (loss) => {
        events.push("<B>");
        loss.backward();
        events.push("</B>");
      },
    });
    staged.release();
    const grads = new Map(model.namedParameters().map(([n, p]) => [n, p.grad!.toFloat64Array()]));
    return { grads, events, kinds: timeline.map((t) => t.kind).join(""), names: model.namedParameters().map(([n]) => n) };
  });
}

describe("the executor's W", () => {
  it("computes every parameter's gradient under ZB-H1, bit-identical to 1F1B's backward", () => {
    const ordinary = run("1f1b");
    const split = run("zb-h1");
    expect(split.kinds).toBe("FBW".repeat(MICRO_BATCHES));
    // 1F1B: each B accumulates every parameter's gradient inside its backward.
    const perB = (events: string[]) => events.join(" ").split("<B>").slice(1).map((s) => s.split("</B>"));
    for (const [inside] of perB(ordinary.events)) expect(inside.trim().split(" ").sort()).toEqual([...ordinary.names].sort());
    // ZB-H1: nothing inside B; W (after it, before the next F's B) accumulates every parameter once.
    for (const [inside, after] of perB(split.events)) {
      expect(inside.trim()).toBe("");
      expect(after.trim().split(" ").sort()).toEqual([...split.names].sort());
    }
    for (const [name, g] of ordinary.grads) {
      const s = split.grads.get(name)!;
      const at = g.findIndex((v, i) => !Object.is(v, s[i]));
      expect(at, `${name}[${at}]: ${g[at]} vs ${s[at]}`).toBe(-1);
    }
  });
});
