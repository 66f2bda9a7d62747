/** `Embedding`: a lookup table [num, dim] initialised N(0, 1) like PyTorch's; ids are int32 of any shape. */
import { embedding, empty } from "@fulgur/tensor";
import type { Tensor } from "@fulgur/tensor";
import { normal_ } from "../init";
import { Module } from "../module";
import { checkPositiveInt } from "../validate";
import type { LayerOptions } from "./options";

export class Embedding extends Module {
  readonly numEmbeddings: number;
  readonly embeddingDim: number;

  constructor(numEmbeddings: number, embeddingDim: number, options: LayerOptions = {}) {
    super();
    this.numEmbeddings = checkPositiveInt("Embedding", "numEmbeddings", numEmbeddings);
    this.embeddingDim = checkPositiveInt("Embedding", "embeddingDim", embeddingDim);
    const w = this.registerParameter("weight", empty([numEmbeddings, embeddingDim], { dtype: options.dtype, device: options.device }));
    normal_(w, 0, 1, options.generator);
  }

  get weight(): Tensor {
    return this.getParameter("weight");
  }

  /** ids int32 [...] -> [..., embeddingDim]. */
  forward(ids: Tensor): Tensor {
    if (ids.dtype !== "int32") throw new TypeError(`Embedding.forward: ids must be int32; got ${ids.dtype}`);
    return embedding(ids, this.weight);
  }

  override extraRepr(): string {
    return `${this.numEmbeddings}, ${this.embeddingDim}`;
  }
}
