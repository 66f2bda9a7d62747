/**
 * Deferred initialisation of modules (DESIGN.md, decision 13). A model built under
 * `withDevice("meta", ...)` has every parameter's shape, dtype and name, and the record of how it was
 * initialised, but no memory; a sharding strategy then materialises it one unit (a transformer
 * block) at a time, sharding each as it is made, so no rank ever holds the whole model. The values
 * are those eager construction from the same seed gives, bit for bit, in whatever order the units
 * are materialised (@fulgur/tensor's `materialize`).
 */
import { materialize } from "@fulgur/tensor";
import type { Module } from "./module";

export interface MaterializeOptions {
  /** Include the parameters and buffers of every descendant (default true); false takes the module's own only. */
  readonly recurse?: boolean;
}

/**
 * Gives the module's meta parameters and buffers memory on `device` and their initial values, in
 * place: each stays the same tensor object (optimizers, hooks and tied references built on it stay
 * valid), only its storage changes. Tensors already off meta are left alone, so materialising the
 * units first and the root last (`{ recurse: false }`, or recursing over what is left) is safe.
 * Returns the module.
 */
export function materializeModule<M extends Module>(module: M, device: string, options: MaterializeOptions = {}): M {
  const recurse = options.recurse ?? true;
  materialize([...module.parameters({ recurse }), ...module.buffers({ recurse })], device);
  return module;
}
