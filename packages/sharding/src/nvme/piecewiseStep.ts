/**
 * The optimizer step with its state on disk.
 *
 * [Note: the piecewise step] DeepSpeed's ZeRO-Infinity steps its optimizer over `sub_group_size`
 * elements at a time, swapping each sub-group's state in from NVMe and out again, with the next
 * sub-group's read overlapping the current one's update. Here a piece is a run of whole units
 * (their master slices together at most `subGroupSize` elements, at least one unit): DeepSpeed cuts
 * its flat partition anywhere; a unit's slice is the engine's smallest flat buffer, so pieces round
 * to units. For piece k the step (1) waits for k's reads, (2) starts k+1's reads, (3) updates k on
 * the CPU optimizer's threads while the I/O threads read, (4) starts k's writes, and (5) waits for
 * k-1's writes and releases k-1's memory. So while k is updated, three pieces are in memory: k,
 * k+1 being read into and k-1 being written from (the memory estimate counts them).
 *
 * The optimizer itself steps each piece: every other parameter's gradient is hidden for that call,
 * so the update of each element is the one the whole step makes (AdamW is elementwise; the step
 * count is per parameter), and the result is identical to the CPU offload step's.
 */
import type { Optimizer } from "@fulgur/nn";
import type { Tensor } from "@fulgur/tensor";
import type { FlatUnit } from "../flatUnit";
import type { NvmeTier, Transfer } from "./nvmeTier";

/**
 * Consecutive units whose slices together hold at most `limit` elements (at least one unit each);
 * `elements` gives a unit's slice size (the memory estimate cuts the same pieces from sizes alone).
 */
export function piecesOf<U>(units: readonly U[], limit: number, elements: (unit: U) => number): U[][] {
  const out: U[][] = [];
  let size = 0;
  for (const u of units) {
    const n = elements(u);
    if (out.length === 0 || size + n > limit) {
      out.push([u]);
      size = n;
    } else {
      out[out.length - 1].push(u);
      size += n;
    }
  }
  return out;
}

/** What a piece reads from and writes to disk: its optimizer state and its master slices (parameter offload). */
function tensorsOf(piece: readonly FlatUnit[], optimizer: Optimizer, tier: NvmeTier): Tensor[] {
  const out: Tensor[] = [];
  for (const unit of piece) {
    // A unit kept on the device or in host memory is stepped with its piece, its state staying where it is.
    if (!unit.onDisk) continue;
    if (unit.masterTier === tier) out.push(unit.master);
    for (const p of unit.optimParams) {
      const s = optimizer.state.get(p);
      if (s) for (const v of Object.values(s)) if (typeof v !== "number") out.push(v);
    }
  }
  return out;
}

/** One `optimizer.step()` over the given parameters only: the others' gradients are hidden for the call. */
function stepOnly(step: () => void, optimizer: Optimizer, params: ReadonlySet<Tensor>): void {
  const hidden: { p: Tensor; grad: Tensor }[] = [];
  for (const g of optimizer.paramGroups) {
    for (const p of g.params) {
      if (p.grad && !params.has(p)) {
        hidden.push({ p, grad: p.grad });
        p.grad = null;
      }
    }
  }
  try {
    step();
  } finally {
    for (const { p, grad } of hidden) p.grad = grad;
  }
}

/**
 * Runs `run` (the precision's step sequence) with `optimizer.step()` stepping piece by piece
 * ([Note: the piecewise step]); state the step makes goes to disk with its piece.
 */
export async function stepInPieces<T>(optimizer: Optimizer, units: readonly FlatUnit[], tier: NvmeTier, subGroupSize: number, run: () => Promise<T>): Promise<T> {
  const pieces = piecesOf(units, subGroupSize, (u) => u.layout.shardNumel);
  const own = Object.prototype.hasOwnProperty.call(optimizer, "step");
  const original = optimizer.step;
  const whole = (): void => void original.call(optimizer);
  const piecewise = <R>(closure?: () => R): R | undefined => {
    const loss = closure ? closure() : undefined;
    let reading: Transfer | null = tier.startFetch(tensorsOf(pieces[0], optimizer, tier));
    let writing: Transfer | null = null;
    try {
      for (let k = 0; k < pieces.length; k++) {
        tier.finish(reading!);
        reading = k + 1 < pieces.length ? tier.startFetch(tensorsOf(pieces[k + 1], optimizer, tier)) : null;
        stepOnly(whole, optimizer, new Set(pieces[k].flatMap((u) => u.optimParams)));
        const written = tier.startEvict(tensorsOf(pieces[k], optimizer, tier), true);
        if (writing) tier.finish(writing);
        writing = written;
      }
      if (writing) tier.finish(writing);
    } catch (err) {
      // Whatever is in flight finishes before the error goes on, so no thread writes into memory being freed.
      for (const t of [reading, writing]) {
        try {
          if (t) tier.finish(t);
        } catch {
          // the first error is the one to report
        }
      }
      throw err;
    }
    return loss;
  };
  (optimizer as { step: typeof piecewise }).step = piecewise;
  try {
    return await run();
  } finally {
    if (own) (optimizer as { step: typeof original }).step = original;
    else delete (optimizer as { step?: unknown }).step;
  }
}
