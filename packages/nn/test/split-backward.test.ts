// The input/weight split of backward on the GPT (zero-bubble pipelines): two micro-batches run as
// input pass, input pass, weight pass, weight pass give every parameter's gradient bit-identical to
// two ordinary backwards, in float32 and under bf16 autocast, with the blocks' linear layers and
// MLPs leaving their weights for the weight pass.
import { describe, expect, it } from "vitest";
import { type Tensor, autocast, deferWeightGradients, fromHost, scope } from "@fulgur/tensor";
import { GPT } from "../src";

const CONFIG = { dModel: 32, nLayers: 2, nHeads: 2, seqLen: 16, vocabSize: 64 };

function batch(k: number): [Tensor, Tensor] {
  const n = 2 * CONFIG.seqLen;
  const idx = Int32Array.from({ length: n }, (_, i) => (i * 13 + 5 + 7 * k) % CONFIG.vocabSize);
  const targets = Int32Array.from({ length: n }, (_, i) => (i * 7 + 3 + k) % CONFIG.vocabSize);
  return [fromHost(idx, [2, CONFIG.seqLen], "int32"), fromHost(targets, [2, CONFIG.seqLen], "int32")];
}

function gradients(split: boolean, bf16: boolean): { grads: Map<string, Float64Array>; deferred: number } {
  return scope(() => {
    const model = new GPT(CONFIG, { seed: 4 });
    const loss = (k: number) => {
      const [idx, targets] = batch(k);
      return bf16 ? autocast("bfloat16", () => model.loss(idx, targets)) : model.loss(idx, targets);
    };
    let deferred = 0;
    if (split) {
      const handles = [0, 1].map((k) => {
        const l = loss(k);
        return deferWeightGradients(() => l.backward());
      });
      deferred = handles.reduce((n, h) => n + h.pending.length, 0);
      for (const h of handles) h.run();
    } else for (const k of [0, 1]) loss(k).backward();
    return { grads: new Map(model.namedParameters().map(([n, p]) => [n, p.grad!.toFloat64Array()])), deferred };
  });
}

describe("split backward on the GPT", () => {
  for (const bf16 of [false, true]) {
    it(`every parameter's gradient is bit-identical${bf16 ? " under bf16 autocast" : ""}`, () => {
      const ordinary = gradients(false, bf16);
      const split = gradients(true, bf16);
      // Per block: qkv and the attention projection (linear), the MLP (one fused op).
      expect(split.deferred).toBeGreaterThanOrEqual(2 * 3 * CONFIG.nLayers);
      for (const [name, g] of ordinary.grads) {
        const s = split.grads.get(name)!;
        const at = g.findIndex((v, i) => !Object.is(v, s[i]));
        expect(at, `${name}[${at}]: ${g[at]} vs ${s[at]}`).toBe(-1);
      }
    });
  }
});
