/**
 * `Linear`: y = x Wᵀ + b with PyTorch's weight layout [out, in] and PyTorch's default init
 * (kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in)) for weight and bias), so a
 * state dict moves between Fulgur and PyTorch without transposes.
 */
import { empty, linear } from "@fulgur/tensor";
import type { Tensor } from "@fulgur/tensor";
import { kaimingUniform_, uniform_ } from "../init";
import { Module } from "../module";
import { checkBoolean, checkPositiveInt } from "../validate";
import type { LayerOptions } from "./options";

export interface LinearOptions extends LayerOptions {
  readonly bias?: boolean;
}

export class Linear extends Module {
  readonly inFeatures: number;
  readonly outFeatures: number;

  constructor(inFeatures: number, outFeatures: number, options: LinearOptions = {}) {
    super();
    this.inFeatures = checkPositiveInt("Linear", "inFeatures", inFeatures);
    this.outFeatures = checkPositiveInt("Linear", "outFeatures", outFeatures);
    const bias = checkBoolean("Linear", "bias", options.bias ?? true);
    const opts = { dtype: options.dtype, device: options.device };
    const w = this.registerParameter("weight", empty([outFeatures, inFeatures], opts));
    kaimingUniform_(w, { a: Math.sqrt(5), generator: options.generator });
    if (bias) {
      const b = this.registerParameter("bias", empty([outFeatures], opts));
      const bound = 1 / Math.sqrt(inFeatures);
      uniform_(b, -bound, bound, options.generator);
    }
  }

  get weight(): Tensor {
    return this.getParameter("weight");
  }

  get bias(): Tensor | null {
    return this.hasParameter("bias") ? this.getParameter("bias") : null;
  }

  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias ?? undefined);
  }

  override extraRepr(): string {
    return `inFeatures=${this.inFeatures}, outFeatures=${this.outFeatures}, bias=${this.bias !== null}`;
  }
}
