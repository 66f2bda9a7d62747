/** Activation modules. GELU is the tanh approximation, the form the anchor uses and the backends fuse. */
import type { Tensor } from "@fulgur/tensor";
import { Module } from "../module";

export class GELU extends Module {
  readonly approximate = "tanh";

  forward(x: Tensor): Tensor {
    return x.gelu();
  }

  override extraRepr(): string {
    return `approximate="tanh"`;
  }
}

export class ReLU extends Module {
  forward(x: Tensor): Tensor {
    return x.relu();
  }
}

export class Tanh extends Module {
  forward(x: Tensor): Tensor {
    return x.tanh();
  }
}
