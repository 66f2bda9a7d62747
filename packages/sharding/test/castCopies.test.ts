/**
 * Autocast copies reshard with their unit ([Note: autocast copies reshard too] in flatUnit.ts):
 * under bf16 autocast a FULL_SHARD unit frees its parameters' bf16 copies after forward and casts
 * them again before its backward, so a step never holds every layer's copy through the activation
 * peak; SHARD_GRAD_OP keeps them. Gradients are bit-identical to the unsharded model's either way.
 */
import { afterEach, describe, expect, it } from "vitest";
import { GPT } from "@fulgur/nn";
import { SoloGroup } from "@fulgur/strategy-kit";
import { type Tensor, type View, autocast, cpuBackend, fromHost, lowPrecisionCopyOf, manualSeed, scope } from "@fulgur/tensor";
import { type ShardingStrategy, ShardingEngine, planUnits } from "../src";

const CONFIG = { dModel: 32, nLayers: 3, nHeads: 2, seqLen: 16, vocabSize: 64 };

function batch(): { idx: Tensor; targets: Tensor } {
  manualSeed(7);
  const n = 2 * CONFIG.seqLen;
  const idx = Int32Array.from({ length: n }, (_, i) => (i * 13 + 5) % CONFIG.vocabSize);
  const targets = Int32Array.from({ length: n }, (_, i) => (i * 7 + 3) % CONFIG.vocabSize);
  return { idx: fromHost(idx, [2, CONFIG.seqLen], "int32"), targets: fromHost(targets, [2, CONFIG.seqLen], "int32") };
}

function sharded(strategy: ShardingStrategy): { model: GPT; engine: ShardingEngine } {
  const model = new GPT(CONFIG, { seed: 3 });
  const solo = new SoloGroup(0);
  const engine = new ShardingEngine(
    model,
    { shard: solo, replicate: null },
    { shardingStrategy: strategy, mixedPrecision: { paramDtype: null, reduceDtype: null }, prefetch: 1, reshardAfterForward: strategy === "FULL_SHARD", offload: false },
    "cpu",
  );
  const blocks = model.blocks.children().map((_, i) => `blocks.${i}`);
  for (const plan of planUnits(model, blocks)) engine.addUnit({ path: plan.path, params: plan.params.map((p) => ({ fqn: p.fqn, tensor: model.getParameter(p.fqn) })) });
  engine.ready();
  return { model, engine };
}

const blockWeights = (model: GPT): Tensor[] =>
  model.namedParameters().filter(([n]) => n.startsWith("blocks.") && n.endsWith("weight") && !n.includes("ln")).map(([, p]) => p);

/** Gradients by parameter name after two steps' backward (the second reads copies kept or cast again). */
function gradients(model: GPT, engine: ShardingEngine | null, afterForward: (model: GPT) => void = () => {}): Map<string, Float32Array> {
  const { idx, targets } = batch();
  for (let step = 0; step < 2; step++) {
    for (const p of model.parameters()) p.grad = null;
    const loss = autocast("bfloat16", () => model.loss(idx, targets));
    afterForward(model);
    engine?.beginBackward();
    loss.backward();
    engine?.endBackward();
    loss.dispose();
  }
  const grads = engine ? engine.finishGradients() : null;
  expect(grads === null || grads.length > 0).toBe(true);
  return new Map(model.namedParameters().map(([n, p]) => [n, Float32Array.from(p.grad!.toArray() as number[])]));
}

describe("autocast copies under a sharded unit at world 1", () => {
  it("FULL_SHARD frees the blocks' bf16 copies after forward; SHARD_GRAD_OP keeps them", () => {
    for (const [strategy, kept] of [["FULL_SHARD", false], ["SHARD_GRAD_OP", true]] as const) {
      const { model, engine } = sharded(strategy);
      let seen: boolean[] = [];
      scope(() => gradients(model, engine, (m) => (seen = blockWeights(m).map((w) => lowPrecisionCopyOf(w) !== null))));
      expect(seen.length).toBeGreaterThan(0);
      expect(seen.every((s) => s === kept)).toBe(true);
      // After backward every copy is back: the optimizer writes them beside the update.
      expect(blockWeights(model).every((w) => lowPrecisionCopyOf(w) !== null)).toBe(true);
    }
  });

  afterEach(() => {
    delete (cpuBackend() as { copyBeside?: unknown }).copyBeside;
  });

  it("FULL_SHARD casts a block's copies again in the pre-backward hook of the block after it, beside that block's backward ([Note: casts ahead of backward])", () => {
    // The CPU backend has no second stream; a copyBeside that records its calls shows which casts
    // the engine lets run beside compute.
    const beside: View[] = [];
    const cpu = cpuBackend() as { copyBeside?: (src: View, dst: View) => void };
    cpu.copyBeside = (src, dst) => {
      beside.push(dst);
      cpuBackend().copy(src, dst);
    };
    const { model, engine } = sharded("FULL_SHARD");
    const blocks = model.blocks.children();
    const copiesOf = (b: number) => blockWeights(model).filter((_, i) => Math.floor(i / (blockWeights(model).length / blocks.length)) === b);
    // When each block's backward starts (after the engine's own pre-backward hook): which blocks' copies are there.
    const present: boolean[][] = [];
    blocks.forEach((block) =>
      block.registerBackwardPreHook(() => {
        present.push(blocks.map((_, b) => copiesOf(b).every((w) => lowPrecisionCopyOf(w) !== null)));
      }),
    );
    scope(() => gradients(model, engine));
    // Backward runs blocks 2, 1, 0: at block 2's start its copies and block 1's are back, block 0's not yet.
    expect(present.slice(-3)).toEqual([
      [false, true, true],
      [true, true, true],
      [true, true, true],
    ]);
    // Blocks 1 and 0 were cast ahead, beside, in each of the two steps; block 2 in its own hook, on compute.
    // Blocks 1 and 0 were cast ahead, beside, in each of the two steps (every parameter with a
    // bf16 copy: weights and biases); block 2 in its own hook, on compute.
    const withCopies = (b: number) => blocks[b].parameters().filter((p) => lowPrecisionCopyOf(p) !== null);
    expect(beside.length).toBe(2 * (withCopies(0).length + withCopies(1).length));
    const aheadCopies = new Set([...withCopies(0), ...withCopies(1)].map((p) => lowPrecisionCopyOf(p)!.storage));
    expect(beside.every((v) => aheadCopies.has(v.storage))).toBe(true);
  });

  it("gradients are bit-identical to the unsharded model's", () => {
    const reference = scope(() => gradients(new GPT(CONFIG, { seed: 3 }), null));
    for (const strategy of ["FULL_SHARD", "SHARD_GRAD_OP"] as const) {
      const { model, engine } = sharded(strategy);
      const got = scope(() => gradients(model, engine));
      for (const [name, g] of reference) expect(got.get(name), `${strategy} ${name}`).toEqual(g);
    }
  });
});
