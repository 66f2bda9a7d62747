/**
 * Causal multi-head self-attention laid out exactly as the anchor (gpt_torch.py): one `qkv` Linear
 * (d -> 3d) whose output is viewed [b, t, 3, H, d/H] and permuted (2, 0, 3, 1, 4) into q, k, v, then
 * scaled dot-product attention with a causal mask and an output `proj` Linear (d -> d). The core is a
 * function over the two Linears so `Block` can own `qkv` and `proj` directly and keep the anchor's
 * parameter names ("blocks.0.qkv.weight").
 */
import { qkvAttention } from "@fulgur/tensor";
import type { Tensor } from "@fulgur/tensor";
import { Module } from "../module";
import { checkPositiveInt, checkRange } from "../validate";
import { Dropout } from "./dropout";
import { Linear } from "./linear";
import type { LayerOptions } from "./options";

/** qkvOut [b, t, 3d] -> attention output [b, t, d] (before the output projection). */
export function causalAttention(qkvOut: Tensor, nHeads: number): Tensor {
  if (qkvOut.ndim !== 3 || qkvOut.shape[2] % (3 * nHeads) !== 0) {
    throw new RangeError(
      `causalAttention: expected [batch, seq, 3 * d] with d divisible by ${nHeads} heads; got [${qkvOut.shape.join(", ")}]`,
    );
  }
  const hd = qkvOut.shape[2] / 3 / nHeads;
  // One fused op (no copies of the heads either way; see @fulgur/tensor's qkvAttention).
  return qkvAttention(qkvOut, nHeads, { causal: true, scale: 1 / Math.sqrt(hd) });
}

export interface CausalSelfAttentionOptions extends LayerOptions {
  /** Dropout on the projected output (residual dropout); default 0. */
  readonly dropout?: number;
}

export class CausalSelfAttention extends Module {
  readonly dModel: number;
  readonly nHeads: number;

  constructor(dModel: number, nHeads: number, options: CausalSelfAttentionOptions = {}) {
    super();
    this.dModel = checkPositiveInt("CausalSelfAttention", "dModel", dModel);
    this.nHeads = checkPositiveInt("CausalSelfAttention", "nHeads", nHeads);
    if (dModel % nHeads !== 0) {
      throw new RangeError(`CausalSelfAttention: dModel (${dModel}) must be divisible by nHeads (${nHeads})`);
    }
    const p = checkRange("CausalSelfAttention", "dropout", options.dropout ?? 0, 0, 1);
    this.registerModule("qkv", new Linear(dModel, 3 * dModel, options));
    this.registerModule("proj", new Linear(dModel, dModel, options));
    this.registerModule("drop", new Dropout(p));
  }

  get qkv(): Linear {
    return this.getSubmodule("qkv") as Linear;
  }

  get proj(): Linear {
    return this.getSubmodule("proj") as Linear;
  }

  get drop(): Dropout {
    return this.getSubmodule("drop") as Dropout;
  }

  /** x [b, t, d] -> [b, t, d]. */
  forward(x: Tensor): Tensor {
    return this.drop.call(this.proj.call(causalAttention(this.qkv.call(x), this.nHeads)));
  }

  override extraRepr(): string {
    return `dModel=${this.dModel}, nHeads=${this.nHeads}`;
  }
}
