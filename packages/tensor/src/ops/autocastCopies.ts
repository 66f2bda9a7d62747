/**
 * Autocast's low-precision copies of parameters, kept from step to step. Under bf16 autocast every
 * fp32 weight is cast to bf16 each forward: 6 bytes of traffic a parameter, 2 ms a step for a 1B
 * model. Keeping the cast and letting the optimizer step write it in the same pass as the fp32
 * update (2 more bytes a parameter, see Backend.adamw's `lowPrecision`) removes that pass. A copy is
 * used only while the version of its parameter's own element range is the one it was made from: an
 * in-place write overlapping the parameter (through the tensor API, or `markModified()`) makes the
 * next use cast again, into the same memory, while writes to other parameters of the same flat
 * buffer leave it current ([Note: range versions] in versions.ts). The copy is exactly what the
 * cast would give (one rounding of the stored fp32 value), so results do not change.
 * `autocastCopyStats()` counts uses served by a kept copy and casts made.
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
// A version no range ever has: the copy must be cast again before it is read.
const STALE = -1;
// Counters, not per-parameter state: a sum over the run is what tells whether the cache works.
const stats = { hits: 0, casts: 0 };
// A parameter dropped without dispose() takes its copy with it when it is collected.
const orphans = new FinalizationRegistry<Tensor>((copy) => {
  if (!copy.isDisposed) copy.dispose();
});

/** The parameter's copy in `dtype`, cast now if it is missing or stale. */
export function autocastCopy(p: Tensor, dtype: DType): Tensor {
  const e = entries.get(p);
  if (e && !e.copy.isDisposed && e.copy.dtype === dtype) {
    const version = p.version;
    if (!e.copy.storageRef.hasMemory) e.copy.storageRef.restoreMemory();
    if (e.version !== version) {
      p.backend.copy(p, e.copy);
      e.version = version;
      stats.casts++;
    } else stats.hits++;
    return e.copy;
  }
  // A copy in another dtype (a model run under two autocast dtypes) is replaced, not kept beside.
  if (e && !e.copy.isDisposed) e.copy.dispose();
  const copy = contiguousCopy(p, dtype);
  untrack(copy);
  stats.casts++;
  entries.set(p, { copy, version: p.version });
  orphans.register(p, copy, p);
  return copy;
}

/**
 * Makes `copy` (memory the caller owns, in a lower-precision dtype, `p`'s size) `p`'s kept copy:
 * an optimizer step writes it beside `p`'s update (`lowPrecisionCopyOf`), and
 * `isLowPrecisionCopyCurrent` says whether it still holds `p`'s values. The sharding engine keeps an
 * offloaded unit's slice this way in the dtype it computes in, in host memory, and uploads that
 * instead of the fp32 slice while it is current. Starts stale (nothing was written into it yet);
 * `dropAutocastCopy(p)` disposes the caller's reference.
 */
export function keepLowPrecisionCopy(p: Tensor, copy: Tensor): void {
  if (copy.numel !== p.numel || copy.dtype === p.dtype) {
    throw new RangeError(`keepLowPrecisionCopy: a copy of ${copy.numel} ${copy.dtype} elements for a ${p.dtype} tensor of ${p.numel}; expected as many elements in another dtype`);
  }
  const e = entries.get(p);
  if (e && !e.copy.isDisposed && e.copy !== copy) e.copy.dispose();
  entries.set(p, { copy, version: STALE });
  orphans.unregister(p);
}

/** Whether `p` has a kept copy holding its current values (written beside its last change). */
export function isLowPrecisionCopyCurrent(p: Tensor): boolean {
  const e = entries.get(p);
  return e !== undefined && !e.copy.isDisposed && e.copy.storageRef.hasMemory && e.version === p.version;
}

/** The copy an optimizer step should write beside `p`'s update, if autocast made one. */
export function lowPrecisionCopyOf(p: Tensor): Tensor | null {
  const e = entries.get(p);
  return e && !e.copy.isDisposed && e.copy.storageRef.hasMemory ? e.copy : null;
}

/**
 * After a step wrote `p` and its copy together: `p` changed, and the copy is current again. Only
 * `p`'s own range is stamped, so marking the parameters of one flat buffer one after another
 * leaves each copy current.
 */
export function markCopyWritten(p: Tensor): void {
  p.markModified();
  const e = entries.get(p);
  if (e) e.version = p.version;
}

/** Frees `p`'s copy (it is made again on next use under autocast). */
export function dropAutocastCopy(p: Tensor): void {
  const e = entries.get(p);
  if (e && !e.copy.isDisposed) e.copy.dispose();
  entries.delete(p);
  orphans.unregister(p);
}

/**
 * Returns the memory of `p`'s copy to the backend while the copy object stays, with every view
 * autograd saved of it (a sharded unit resharding after forward: FSDP2 frees the low-precision
 * gathered copy the same way, so a FULL_SHARD step never holds every layer's copy at once). The
 * next use under autocast, or `restoreAutocastCopy`, allocates and casts it again.
 */
export function releaseAutocastCopy(p: Tensor): void {
  const e = entries.get(p);
  if (!e || e.copy.isDisposed || !e.copy.storageRef.hasMemory) return;
  e.copy.storageRef.releaseMemory();
  e.version = STALE;
}

/**
 * Puts back a released copy, cast afresh from `p`, before a backward reads the views of it that
 * autograd saved in forward. A no-op for a copy that was never released. `beside`: the cast may
 * run beside the work queued before it (`Backend.copyBeside`), for a restore issued ahead of time.
 */
export function restoreAutocastCopy(p: Tensor, beside = false): void {
  const e = entries.get(p);
  if (!e || e.copy.isDisposed || e.copy.storageRef.hasMemory) return;
  e.copy.storageRef.restoreMemory();
  if (beside && p.backend.copyBeside) p.backend.copyBeside(p, e.copy);
  else p.backend.copy(p, e.copy);
  e.version = p.version;
  stats.casts++;
}

export interface AutocastCopyStats {
  /** Uses under autocast served by a kept copy, current as it was. */
  readonly hits: number;
  /** Casts made: a new copy, or a stale one cast again. */
  readonly casts: number;
}

/** Counts since the last reset (or process start) over all parameters: is the cast cache working? */
export function autocastCopyStats(): AutocastCopyStats {
  return { hits: stats.hits, casts: stats.casts };
}

export function resetAutocastCopyStats(): void {
  stats.hits = 0;
  stats.casts = 0;
}
