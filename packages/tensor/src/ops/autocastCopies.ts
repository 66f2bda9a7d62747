/**
 * Autocast's low-precision copies of parameters, kept from step to step. Under bf16 autocast every
 * fp32 weight is cast to bf16 each forward: 6 bytes of traffic a parameter, 2 ms a step for a 1B
 * model. Keeping the cast and letting the optimizer step write it in the same pass as the fp32
 * update (2 more bytes a parameter, see Backend.adamw's `lowPrecision`) removes that pass. A copy is
 * used only while its parameter's storage version is the one it was made from: an in-place write
 * through the tensor API (or `markModified()`) makes the next use cast again, into the same memory.
 * The copy is exactly what the cast would give (one rounding of the stored fp32 value), so results
 * do not change.
 */
import type { DType } from "../dtype";
import type { Tensor } from "../tensor";
import { untrack } from "../memory";
import { contiguousCopy } from "./elementwise";

interface Entry {
  readonly copy: Tensor;
  version: number;
}

const entries = new WeakMap<Tensor, Entry>();
// A parameter dropped without dispose() takes its copy with it when it is collected.
const orphans = new FinalizationRegistry<Tensor>((copy) => {
  if (!copy.isDisposed) copy.dispose();
});

/** The parameter's copy in `dtype`, cast now if it is missing or stale. */
export function autocastCopy(p: Tensor, dtype: DType): Tensor {
  const e = entries.get(p);
  if (e && !e.copy.isDisposed && e.copy.dtype === dtype) {
    if (e.version !== p.storageRef.version) {
      p.backend.copy(p, e.copy);
      e.version = p.storageRef.version;
    }
    return e.copy;
  }
  // A copy in another dtype (a model run under two autocast dtypes) is replaced, not kept beside.
  if (e && !e.copy.isDisposed) e.copy.dispose();
  const copy = contiguousCopy(p, dtype);
  untrack(copy);
  entries.set(p, { copy, version: p.storageRef.version });
  orphans.register(p, copy, p);
  return copy;
}

/** The copy an optimizer step should write beside `p`'s update, if autocast made one. */
export function lowPrecisionCopyOf(p: Tensor): Tensor | null {
  const e = entries.get(p);
  return e && !e.copy.isDisposed ? e.copy : null;
}

/** After a step wrote `p` and its copy together: `p` changed, and the copy is current again. */
export function markCopyWritten(p: Tensor): void {
  p.markModified();
  const e = entries.get(p);
  if (e) e.version = p.storageRef.version;
}

/** Frees `p`'s copy (it is made again on next use under autocast). */
export function dropAutocastCopy(p: Tensor): void {
  const e = entries.get(p);
  if (e && !e.copy.isDisposed) e.copy.dispose();
  entries.delete(p);
  orphans.unregister(p);
}
