/**
 * A unit's own options (UnitPlan.options, FSDP's per-unit `fullyShard` options) replace the
 * engine's for that unit only: its compute and reduce dtypes, and whether it frees its gathered
 * parameters after forward. At world 1 a unit that casts is gathered (not resident), so the choice
 * shows in its state between forward and backward.
 */
import { describe, expect, it } from "vitest";
import { GPT } from "@fulgur/nn";
import { SoloGroup } from "@fulgur/strategy-kit";
import { autocast, fromHost, scope } from "@fulgur/tensor";
import { type UnitOptions, FULL_PRECISION, ShardingEngine, planUnits } from "../src";

const CONFIG = { dModel: 32, nLayers: 3, nHeads: 2, seqLen: 16, vocabSize: 64 };
const BF16 = Object.freeze({ paramDtype: "bfloat16", reduceDtype: null } as const);

function sharded(own: Record<string, UnitOptions>): { model: GPT; engine: ShardingEngine } {
  const model = new GPT(CONFIG, { seed: 3 });
  const engine = new ShardingEngine(
    model,
    { shard: new SoloGroup(0), replicate: null },
    { shardingStrategy: "FULL_SHARD", mixedPrecision: FULL_PRECISION, prefetch: 1, reshardAfterForward: true, offload: false },
    "cpu",
  );
  const blocks = model.blocks.children().map((_, i) => `blocks.${i}`);
  for (const plan of planUnits(model, blocks)) {
    engine.addUnit({ path: plan.path, params: plan.params.map((p) => ({ fqn: p.fqn, tensor: model.getParameter(p.fqn) })), options: own[plan.path] });
  }
  engine.ready();
  return { model, engine };
}

describe("per-unit options in the sharding engine", () => {
  it("each unit computes, reduces and reshards as its own options say; the others as the engine's", () => {
    const { model, engine } = sharded({
      "blocks.0": { mixedPrecision: { paramDtype: "bfloat16", reduceDtype: "float32" }, reshardAfterForward: false },
      "blocks.2": { mixedPrecision: BF16 },
    });
    const byName = new Map(engine.units.map((u) => [u.name, u]));
    expect(["blocks.0", "blocks.1", "blocks.2", ""].map((n) => [byName.get(n)!.computeDtype, byName.get(n)!.reduceDtype, byName.get(n)!.resident])).toEqual([
      ["bfloat16", "float32", false],
      ["float32", "float32", true],
      ["bfloat16", "bfloat16", false],
      ["float32", "float32", true],
    ]);
    const n = 2 * CONFIG.seqLen;
    const idx = fromHost(Int32Array.from({ length: n }, (_, i) => (i * 13 + 5) % CONFIG.vocabSize), [2, CONFIG.seqLen], "int32");
    const targets = fromHost(Int32Array.from({ length: n }, (_, i) => (i * 7 + 3) % CONFIG.vocabSize), [2, CONFIG.seqLen], "int32");
    scope(() => {
      const loss = autocast("bfloat16", () => model.loss(idx, targets));
      // Between forward and backward: blocks.0 kept gathered by its own option, blocks.2 freed as the engine says.
      expect(engine.units.map((u) => [u.name, u.state])).toEqual([
        ["blocks.0", "gathered"],
        ["blocks.1", "gathered"],
        ["blocks.2", "sharded"],
        ["", "gathered"],
      ]);
      engine.beginBackward();
      loss.backward();
      engine.endBackward();
    });
    // After its backward every cast unit is freed, whatever it did after forward.
    expect(engine.units.map((u) => u.state)).toEqual(["sharded", "gathered", "sharded", "gathered"]);
    const grads = engine.finishGradients();
    expect(grads).toHaveLength(model.parameters().length);
    // The same gradients as the unsharded model under autocast, within bf16's rounding (the cast
    // units keep their norms' weights and their gradient buffers in bf16, autocast in fp32).
    const reference = new GPT(CONFIG, { seed: 3 });
    scope(() => autocast("bfloat16", () => reference.loss(idx, targets)).backward());
    const got = new Map(model.namedParameters().map(([name, p]) => [name, p.grad!.toArray() as number[]]));
    for (const [name, p] of reference.namedParameters()) {
      const want = p.grad!.toArray() as number[];
      const scale = Math.max(...want.map(Math.abs));
      const worst = Math.max(...want.map((w, i) => Math.abs(w - got.get(name)![i])));
      expect(worst, name).toBeLessThanOrEqual(0.02 * scale + 1e-6);
    }
    engine.remove();
  });
});
