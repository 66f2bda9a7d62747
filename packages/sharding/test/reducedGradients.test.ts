/**
 * Reduced gradients are added into the slice one unit late ([Note: reduced into the slice] in
 * flatUnit.ts), so an accumulation window holds one unit's reduced gradients at a time instead of
 * every unit's for every micro-batch. The gradients are those of the micro-batches' steps summed.
 * At world 1 a unit that computes in bf16 is gathered (not resident), so its gradients take the
 * reduction path: over one shard the reduced gradient is the flat buffer itself. (A step's first
 * reduction straight into the slice, over several shards, is held to the plan in the multi-process
 * FSDP and ZeRO tests.)
 */
import { describe, expect, it } from "vitest";
import { GPT } from "@fulgur/nn";
import { SoloGroup } from "@fulgur/strategy-kit";
import { type DType, type Tensor, fromHost, memoryStats, scope } from "@fulgur/tensor";
import { ShardingEngine, planUnits } from "../src";

const CONFIG = { dModel: 32, nLayers: 3, nHeads: 2, seqLen: 16, vocabSize: 64 };
/** A block's parameters: two norms, qkv, the projection and the MLP. */
const BLOCK = 2 * 2 * 32 + (3 * 32 * 32 + 3 * 32) + (32 * 32 + 32) + (4 * 32 * 32 + 4 * 32) + (4 * 32 * 32 + 32);
/** The root unit's: the two embeddings, the final norm and the head. */
const ROOT = 64 * 32 + 16 * 32 + 2 * 32 + 64 * 32;

function sharded(reduceDtype: DType): { model: GPT; engine: ShardingEngine } {
  const model = new GPT(CONFIG, { seed: 3 });
  const engine = new ShardingEngine(
    model,
    { shard: new SoloGroup(0), replicate: null },
    { shardingStrategy: "FULL_SHARD", mixedPrecision: { paramDtype: "bfloat16", reduceDtype }, prefetch: 1, reshardAfterForward: true, offload: false },
    "cpu",
  );
  const blocks = model.blocks.children().map((_, i) => `blocks.${i}`);
  for (const plan of planUnits(model, blocks)) engine.addUnit({ path: plan.path, params: plan.params.map((p) => ({ fqn: p.fqn, tensor: model.getParameter(p.fqn) })) });
  engine.ready();
  return { model, engine };
}

function microBatch(k: number): { idx: Tensor; targets: Tensor } {
  const n = 2 * CONFIG.seqLen;
  const idx = Int32Array.from({ length: n }, (_, i) => (i * 13 + 5 + 7 * k) % CONFIG.vocabSize);
  const targets = Int32Array.from({ length: n }, (_, i) => (i * 7 + 3 + 5 * k) % CONFIG.vocabSize);
  return { idx: fromHost(idx, [2, CONFIG.seqLen], "int32"), targets: fromHost(targets, [2, CONFIG.seqLen], "int32") };
}

/**
 * Steps over the given micro-batches (one window each), without updating: each step's gradients
 * of the blocks (the optimizer's, one array per parameter segment) and the live bytes before the
 * window and after each micro-batch's backward.
 */
function steps(reduceDtype: DType, windows: readonly (readonly number[])[]): { grads: Float32Array[][]; live: number[][] } {
  const { engine, model } = sharded(reduceDtype);
  const batches = new Map<number, { idx: Tensor; targets: Tensor }>();
  const grads: Float32Array[][] = [];
  const live: number[][] = [];
  for (const window of windows) {
    const after: number[] = [memoryStats("cpu").liveBytes];
    for (const k of window) {
      const { idx, targets } = batches.get(k) ?? batches.set(k, microBatch(k)).get(k)!;
      scope(() => {
        const loss = model.loss(idx, targets);
        engine.beginBackward();
        loss.backward();
        engine.endBackward();
      });
      after.push(memoryStats("cpu").liveBytes);
    }
    engine.finishGradients();
    // The blocks' segments: the root unit accumulates in one buffer of its own over the window.
    const blocks = engine.units.filter((u) => u.name !== "").flatMap((u) => [...u.optimParams]);
    grads.push(blocks.map((p) => Float32Array.from(p.grad!.toArray())));
    engine.afterStep();
    live.push(after);
  }
  engine.remove();
  return { grads, live };
}

describe("reduced gradients are added into the slice one unit late", () => {
  for (const reduceDtype of ["float32", "bfloat16"] as const) {
    it(`reduced in ${reduceDtype}: three micro-batches give the sum of their own steps' gradients, and hold one unit's reduced gradients at a time`, () => {
      const alone = steps(reduceDtype, [[0], [1], [2]]).grads;
      const { grads, live } = steps(reduceDtype, [[0, 1, 2], [0, 1, 2]]);
      // The slice adds in float32 in micro-batch order.
      const summed = alone[0].map((g, i) => g.map((v, j) => Math.fround(Math.fround(v + alone[1][i][j]) + alone[2][i][j])));
      for (const step of grads) {
        expect(step).toHaveLength(summed.length);
        step.forEach((g, i) => expect(g, `segment ${i}`).toEqual(summed[i]));
      }
      // The second window (the first made the slices): after each micro-batch's backward the root
      // unit's gradient buffer (bf16, one for the window) and the reduced gradients of the unit
      // reduced last (block 0), which wait to be added until the next reduction; the other blocks'
      // are in their slices already. Kept to the step, they were every block's of every micro-batch.
      const [before, ...after] = live[1];
      const waiting = ROOT * 2 + BLOCK * (reduceDtype === "float32" ? 4 : 2);
      expect(after.map((x) => x - before)).toEqual([waiting, waiting, waiting]);
    });
  }
});
