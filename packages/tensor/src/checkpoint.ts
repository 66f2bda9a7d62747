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
      y = enableGrad(() => autocast(castDtype, () => fn(...detached)));
    } finally {
      generator.setState(resume);
    }
    // In a split backward's input pass the detached inputs are not weights ([Note: the weight pass]).
    withGradientsNow(detached, () => y.backward(g));
    return detached.map((d) => (d.requiresGrad ? d.grad : null));
  });
}
