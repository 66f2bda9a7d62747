/** `LayerNorm` over the last dimension, weight 1 and bias 0 at init (PyTorch's defaults). */
import { empty, layerNorm } from "@fulgur/tensor";
import type { LayerNormOptions as LayerNormCallOptions, Tensor } from "@fulgur/tensor";
import { ones_, zeros_ } from "../init";
import { Module } from "../module";
import { checkBoolean, checkPositive, checkPositiveInt } from "../validate";
import type { LayerOptions } from "./options";

export interface LayerNormOptions extends Omit<LayerOptions, "generator"> {
  readonly eps?: number;
  readonly elementwiseAffine?: boolean;
  /** Learn a bias too (default true); ignored without elementwiseAffine. */
  readonly bias?: boolean;
}

export type { LayerNormCallOptions };

export class LayerNorm extends Module {
  readonly normalizedShape: number;
  readonly eps: number;
  readonly elementwiseAffine: boolean;

  constructor(normalizedShape: number, options: LayerNormOptions = {}) {
    super();
    this.normalizedShape = checkPositiveInt("LayerNorm", "normalizedShape", normalizedShape);
    this.eps = checkPositive("LayerNorm", "eps", options.eps ?? 1e-5);
    this.elementwiseAffine = checkBoolean("LayerNorm", "elementwiseAffine", options.elementwiseAffine ?? true);
    const opts = { dtype: options.dtype, device: options.device };
    if (this.elementwiseAffine) {
      ones_(this.registerParameter("weight", empty([normalizedShape], opts)));
      if (checkBoolean("LayerNorm", "bias", options.bias ?? true)) zeros_(this.registerParameter("bias", empty([normalizedShape], opts)));
    }
  }

  get weight(): Tensor | null {
    return this.hasParameter("weight") ? this.getParameter("weight") : null;
  }

  get bias(): Tensor | null {
    return this.hasParameter("bias") ? this.getParameter("bias") : null;
  }

  /** `options.outputDtype` picks the output's dtype (see @fulgur/tensor's layerNorm). */
  forward(x: Tensor, options: LayerNormCallOptions = {}): Tensor {
    const d = x.shape[x.shape.length - 1];
    if (d !== this.normalizedShape) {
      throw new RangeError(`LayerNorm.forward: last dimension must be ${this.normalizedShape}; got shape [${x.shape.join(", ")}]`);
    }
    return layerNorm(x, [this.normalizedShape], this.weight ?? undefined, this.bias ?? undefined, this.eps, options);
  }

  override extraRepr(): string {
    return `${this.normalizedShape}, eps=${this.eps}, elementwiseAffine=${this.elementwiseAffine}`;
  }
}
