/**
 * Activation checkpointing: run a function without keeping its activations and run it again
 * during backward. Random draws (dropout) are replayed from the same Philox counters and the
 * autocast dtype is restored, so the recomputation sees exactly what the forward saw.
 */
import { autocast, autocastDType, enableGrad, noGrad } from "./gradMode";
import { scope } from "./memory";
import { defaultGenerator } from "./random";
import type { Tensor } from "./tensor";
import { needsGrad, record } from "./ops/util";
import { withGradientsNow } from "./autograd";

export function checkpoint(fn: (...inputs: Tensor[]) => Tensor, ...inputs: Tensor[]): Tensor {
  if (!needsGrad(...inputs)) return fn(...inputs);
  const generator = defaultGenerator();
  const rngState = generator.getState();
  const castDtype = autocastDType();
  const out = scope(() => noGrad(() => fn(...inputs)));
  const flags = inputs.map((t) => t.requiresGrad);
  return record(out, "Checkpoint", inputs, inputs, (g, saved) => {
    const resume = generator.getState();
    generator.setState(rngState);
    const detached = saved.map((s, i) => {
      const d = s.detach();
      return flags[i] ? d.requiresGrad_(true) : d;
    });
    let y: Tensor;
    try {
      // In a scope of its own: the recomputation's temporaries are freed at once and its saved
      // tensors belong to autograd alone, so backward frees each as soon as it has used it (as the
      // forward's were). Left to the checkpoint node's scope, every one of them lived until the
      // node's backward ended: the whole segment's activations beside its backward's gradients.
      y = scope(() => enableGrad(() => autocast(castDtype, () => fn(...detached))));
    } finally {
      generator.setState(resume);
    }
    // In a split backward's input pass the detached inputs are not weights ([Note: the weight pass]).
    withGradientsNow(detached, () => y.backward(g));
    return detached.map((d) => (d.requiresGrad ? d.grad : null));
  });
}
