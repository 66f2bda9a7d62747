/**
 * Parameters: leaf tensors that require gradients and outlive every scope. A parameter is an
 * ordinary `Tensor` marked in a WeakSet rather than a subclass, so a strategy can swap in a view of
 * its flat buffer (decision 5) with `parameter(view)` and nothing downstream notices the difference.
 */
import { noGrad } from "@fulgur/tensor";
import type { Tensor } from "@fulgur/tensor";

const PARAMETERS = new WeakSet<Tensor>();

/**
 * Turns `t` into a parameter: a leaf (detached from any graph), requiresGrad on, taken out of every
 * open scope (`untrack`) so `scope()` never frees it; it lives until disposed. A non-leaf `t` gives
 * a new tensor sharing its storage; a leaf is marked and returned as is.
 */
export function parameter(t: Tensor, requiresGrad = true): Tensor {
  if (t.isDisposed) throw new Error("parameter: the tensor was disposed");
  let leaf = t;
  if (!t.isLeaf) leaf = noGrad(() => t.detach());
  leaf.requiresGrad_(requiresGrad);
  leaf.untrack();
  PARAMETERS.add(leaf);
  return leaf;
}

/** True for tensors made by `parameter()`. */
export function isParameter(t: unknown): t is Tensor {
  return typeof t === "object" && t !== null && PARAMETERS.has(t as Tensor);
}
