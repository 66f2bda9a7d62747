// The input/weight split of backward on the GPT (zero-bubble pipelines): two micro-batches run as
// input pass, input pass, weight pass, weight pass give every parameter's gradient bit-identical to
// two ordinary backwards, in float32, under bf16 autocast and with activation checkpointing, with
// every op holding parameters (embeddings, layer norms, linear layers, the fused MLPs) leaving them
// all for the weight pass.
import { describe, expect, it } from "vitest";
import { type Tensor, autocast, deferWeightGradients, fromHost, scope } from "@fulgur/tensor";
import { GPT, GPT_CONFIGS } from "../src";

const CONFIG = GPT_CONFIGS.tiny;
// Sequences shorter than the context: a quick test, the same ops.
const SEQ = 16;

function batch(k: number): [Tensor, Tensor] {
  const n = 2 * SEQ;
  const idx = Int32Array.from({ length: n }, (_, i) => (i * 13 + 5 + 7 * k) % CONFIG.vocabSize);
  const targets = Int32Array.from({ length: n }, (_, i) => (i * 7 + 3 + k) % CONFIG.vocabSize);
  return [fromHost(idx, [2, SEQ], "int32"), fromHost(targets, [2, SEQ], "int32")];
}

interface Run {
  grads: Map<string, Float64Array>;
  deferred: number;
  /** Parameters holding a gradient after the input passes, before the weight passes. */
  early: string[];
}

function gradients(split: boolean, bf16: boolean, activationCheckpointing = false): Run {
  return scope(() => {
    const model = new GPT({ ...CONFIG, activationCheckpointing }, { seed: 4 });
    const loss = (k: number) => {
      const [idx, targets] = batch(k);
      return bf16 ? autocast("bfloat16", () => model.loss(idx, targets)) : model.loss(idx, targets);
    };
    let deferred = 0;
    let early: string[] = [];
    if (split) {
      const handles = [0, 1].map((k) => {
        const l = loss(k);
        return deferWeightGradients(() => l.backward());
      });
      deferred = handles.reduce((n, h) => n + h.pending.length, 0);
      early = model.namedParameters().flatMap(([n, p]) => (p.grad ? [n] : []));
      for (const h of handles) h.run();
    } else for (const k of [0, 1]) loss(k).backward();
    return { grads: new Map(model.namedParameters().map(([n, p]) => [n, p.grad!.toFloat64Array()])), deferred, early };
  });
}

describe("split backward on the GPT", () => {
  const cases = [
    { bf16: false, ac: false, label: "" },
    { bf16: true, ac: false, label: " under bf16 autocast" },
    { bf16: false, ac: true, label: " with activation checkpointing" },
  ];
  for (const { bf16, ac, label } of cases) {
    it(`every parameter's gradient is bit-identical${label}`, () => {
      const ordinary = gradients(false, bf16, ac);
      const split = gradients(true, bf16, ac);
      // Per micro-batch: the two embeddings, per block two layer norms, qkv, proj and the MLP (one
      // fused op), the final layer norm and the head; no parameter's gradient in the input passes.
      expect(split.deferred).toBe(2 * (2 + 5 * CONFIG.nLayers + 2));
      expect(split.early).toEqual([]);
      for (const [name, g] of ordinary.grads) {
        const s = split.grads.get(name)!;
        const at = g.findIndex((v, i) => !Object.is(v, s[i]));
        expect(at, `${name}[${at}]: ${g[at]} vs ${s[at]}`).toBe(-1);
      }
    });
  }
});
