/** Overflow detection for loss scaling: one device reduction per gradient, one host read. */
import { type Tensor, noGrad, scope } from "@fulgur/tensor";

/** True when every gradient is finite. */
export function gradientsAreFinite(grads: readonly Tensor[]): boolean {
  return noGrad(() =>
    scope(() => {
      if (grads.length === 0) return true;
      // x - x is 0 for finite x and NaN for NaN and ±Inf, so the sum is 0 exactly when all are finite.
      let total: Tensor | null = null;
      for (const g of grads) {
        const s = g.cast("float32").sub(g.cast("float32")).sum();
        total = total ? total.add(s) : s;
      }
      return total!.item() === 0;
    }),
  );
}
