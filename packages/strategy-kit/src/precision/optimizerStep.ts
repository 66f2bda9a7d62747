/**
 * The one optimizer-step sequence (Lightning's precision plugin owns it too): unscale → clip →
 * step, skipped when fp16 gradients overflowed → zero gradients. Strategies differ only in where
 * gradients live: replicated strategies pass nothing, sharded ones pass `collectives` so the
 * overflow decision and the clipping norm cover every rank's shard, and `gradients` when the
 * tensors the optimizer steps over are not parameters' `.grad`.
 */
import type { OptimizerStepResult, PrecisionStepOptions } from "@fulgur/core";
import { type Optimizer, clampGradients, gradNormPart, scaleToNorm } from "@fulgur/nn";
import type { Tensor } from "@fulgur/tensor";
import type { GradScaler } from "./gradScaler";

function gradsOf(optimizer: Optimizer): Tensor[] {
  const out: Tensor[] = [];
  for (const g of optimizer.paramGroups) for (const p of g.params) if (p.grad) out.push(p.grad);
  return out;
}

export async function runOptimizerStep(
  optimizer: Optimizer,
  options: PrecisionStepOptions,
  scaler: GradScaler | null,
): Promise<OptimizerStepResult> {
  const grads = options.gradients ?? gradsOf(optimizer);
  const collectives = options.collectives;
  let finite = true;
  if (scaler) {
    finite = scaler.unscale(grads);
    if (collectives) finite = await collectives.allFinite(finite);
  }
  let gradNorm: number | undefined;
  if (options.gradientClipVal !== undefined && finite) {
    if ((options.gradientClipAlgorithm ?? "norm") === "norm") {
      const part = gradNormPart(grads, 2);
      // The same root clipGradNorm takes, so one rank's clipping matches nn's to the bit.
      gradNorm = (collectives ? await collectives.sumOverRanks(part) : part) ** (1 / 2);
      scaleToNorm(grads, gradNorm, options.gradientClipVal);
    } else {
      // Value clipping is elementwise: each rank clips what it holds.
      clampGradients(grads, options.gradientClipVal);
    }
  }
  if (finite) optimizer.step();
  scaler?.update(finite);
  optimizer.zeroGrad(true);
  return gradNorm === undefined ? { stepped: finite } : { stepped: finite, gradNorm };
}
