/**
 * Activation checkpointing by policy, on the engine's recompute primitive (`checkpoint` in
 * @fulgur/tensor): a picked module's forward keeps only its inputs and runs again in backward.
 * Under FSDP the recomputation finds the unit's parameters gathered: the unit's backward pre-hook
 * fires on the output gradient, before the recomputation runs.
 */
import type { Module } from "@fulgur/nn";
import { type Tensor, checkpoint, isTensor } from "@fulgur/tensor";

/** Wraps each module's forward in `checkpoint`; returns a function that restores them. */
export function applyActivationCheckpointing(modules: readonly Module[]): () => void {
  const undo: (() => void)[] = [];
  for (const m of modules) {
    const original = m.forward;
    const own = Object.prototype.hasOwnProperty.call(m, "forward");
    m.forward = function (this: Module, ...args: unknown[]): unknown {
      // Only tensor arguments can be saved and replayed; other calls run as they are.
      if (!args.every(isTensor)) return original.apply(this, args);
      return checkpoint((...xs: Tensor[]) => original.apply(this, xs) as Tensor, ...(args as Tensor[]));
    };
    undo.push(() => {
      if (own) m.forward = original;
      else delete (m as { forward?: unknown }).forward;
    });
  }
  return () => undo.splice(0).forEach((f) => f());
}
