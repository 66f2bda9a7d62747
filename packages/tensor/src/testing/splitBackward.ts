/**
 * The split backward ([Note: the weight pass] in autograd.ts) against the ordinary one on a
 * conformance case: two micro-batches accumulated, once with ordinary backwards and once as input
 * pass, input pass, weight pass, weight pass (the order a zero-bubble schedule runs them), with the
 * first input's gradient needed at once (a pipeline stage's received activation) and the others
 * deferred. Every gradient must be bit-identical: the same products of the same operands.
 */
import { deferWeightGradients } from "../autograd";
import type { DType } from "../dtype";
import { autocast } from "../gradMode";
import { scope } from "../memory";
import { Generator } from "../random";
import type { Tensor } from "../tensor";
import * as ops from "../ops";
import { type ConformanceCase, drawInput } from "./conformance";

export interface SplitBackwardResult {
  readonly name: string;
  /**
   * Whether two ordinary backwards agree bit for bit on this device. Kernels that add with atomics
   * (the embedding's scatter on CUDA) do not; only those that do are held to bit identity.
   */
  readonly deterministic: boolean;
  /** The largest difference between the split's and the ordinary gradients, relative to the largest magnitude. */
  readonly maxRelativeDifference: number;
  /** "grad<i>[<element>]: <ordinary> vs <split>" for the first differing element of each input; empty when identical. */
  readonly mismatches: readonly string[];
  /** Inputs whose gradient the split left for the weight pass in at least one node (0 when no op split). */
  readonly deferredNodes: number;
}

export function runSplitBackwardCase(c: ConformanceCase, device: string, dtype: DType, seed: number): SplitBackwardResult {
  return scope(() => {
    const gen = new Generator(seed);
    const base = c.inputs.map((s) => drawInput(s, gen));
    const run = (split: boolean): { grads: Float64Array[]; deferred: number } =>
      scope(() => {
        const ins = base.map((t, i) => {
          const moved = ops.to(t.dtype === "int32" ? t : ops.cast(t, dtype), device);
          const leaf = moved === t ? t.detach() : moved;
          if (c.inputs[i].grad) leaf.requiresGrad_(true);
          return leaf;
        });
        const forward = (k: number): Tensor => {
          const y = c.autocast ? autocast(dtype === "float16" ? "float16" : "bfloat16", () => c.fn(...ins)) : c.fn(...ins);
          const probe = ops.to(ops.cast(ops.randn(y.shape, { dtype: "float64", generator: new Generator(seed + 10 + k) }), y.dtype), device);
          return ops.sum(ops.mul(y, probe));
        };
        let deferred = 0;
        if (split) {
          const now = ins.slice(0, 1).filter((t) => t.requiresGrad);
          const handles = [0, 1].map((k) => {
            const loss = forward(k);
            return deferWeightGradients(() => loss.backward(), now);
          });
          deferred = handles.reduce((n, h) => n + h.pending.length, 0);
          for (const h of handles) h.run();
        } else {
          for (const k of [0, 1]) forward(k).backward();
        }
        const grads = ins.flatMap((t, i) => (c.inputs[i].grad ? [t.grad ? t.grad.toFloat64Array() : new Float64Array(t.numel)] : []));
        for (const t of ins) t.grad?.dispose();
        return { grads, deferred };
      });
    const ordinary = run(false);
    const again = run(false);
    const deterministic = ordinary.grads.every((g, i) => g.every((v, k) => Object.is(v, again.grads[i][k])));
    const split = run(true);
    let maxRelativeDifference = 0;
    ordinary.grads.forEach((g, i) => {
      const scale = g.reduce((m, v) => Math.max(m, Math.abs(v)), 0) || 1;
      g.forEach((v, k) => (maxRelativeDifference = Math.max(maxRelativeDifference, Math.abs(v - split.grads[i][k]) / scale)));
    });
    const mismatches: string[] = [];
    ordinary.grads.forEach((g, i) => {
      const s = split.grads[i];
      const at = g.findIndex((v, k) => !Object.is(v, s[k]));
      if (at >= 0) mismatches.push(`grad${i}[${at}]: ${g[at]} vs ${s[at]}`);
    });
    return { name: c.name, deterministic, maxRelativeDifference, mismatches, deferredNodes: split.deferred };
  });
}
