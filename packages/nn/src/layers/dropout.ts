/**
 * `Dropout`: zeroes elements with probability p and scales the rest by 1/(1-p) in training;
 * identity in eval. Masks come from the default generator unless one is given; activation
 * checkpointing replays only the default generator, so layers inside checkpointed blocks use it.
 */
import { dropout } from "@fulgur/tensor";
import type { Generator, Tensor } from "@fulgur/tensor";
import { Module } from "../module";
import { checkRange } from "../validate";

export class Dropout extends Module {
  readonly p: number;
  private readonly generator: Generator | undefined;

  constructor(p = 0.5, options: { generator?: Generator } = {}) {
    super();
    this.p = checkRange("Dropout", "p", p, 0, 1);
    this.generator = options.generator;
  }

  forward(x: Tensor): Tensor {
    // p = 0 or eval: return the input itself so no mask is drawn and no op is recorded.
    if (!this.training || this.p === 0) return x;
    return dropout(x, this.p, true, this.generator);
  }

  override extraRepr(): string {
    return `p=${this.p}`;
  }
}
