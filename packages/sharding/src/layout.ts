/**
 * Where every parameter of a unit lives (DESIGN.md decisions 5 and 15): the unit's parameters
 * are laid back to back in one flat buffer, padded to a multiple of the shard count, and shard
 * `r` holds the contiguous slice [r·S, (r+1)·S) of it. A parameter's segment on a shard is the
 * intersection of its flattened range with that slice, so optimizer state and checkpoints can
 * name each piece by the parameter's fully qualified name and flattened range — which is what
 * lets any world size read any other's shards.
 */

export interface ParamSlot {
  /** Fully qualified name in the root module ("model.blocks.0.qkv.weight"). */
  readonly fqn: string;
  readonly shape: readonly number[];
  readonly numel: number;
  /** First element of this parameter in the unit's (unpadded) flat buffer. */
  readonly offset: number;
}

/** One parameter's piece on one shard: flattened range [start, end) of the parameter. */
export interface Segment {
  readonly slot: ParamSlot;
  /** Range within the parameter, flattened. */
  readonly start: number;
  readonly end: number;
  /** Where the piece begins in the shard's local slice. */
  readonly localOffset: number;
}

export interface UnitLayout {
  readonly slots: readonly ParamSlot[];
  /** Elements of all parameters together. */
  readonly numel: number;
  /** numel rounded up to a multiple of `shards`. */
  readonly paddedNumel: number;
  readonly shards: number;
  /** Elements per shard. */
  readonly shardNumel: number;
}

export function layoutUnit(params: readonly { fqn: string; shape: readonly number[] }[], shards: number): UnitLayout {
  if (!Number.isInteger(shards) || shards < 1) throw new RangeError(`shards: got ${shards}; expected a positive integer`);
  let offset = 0;
  const slots = params.map((p) => {
    const numel = p.shape.reduce((a, b) => a * b, 1);
    const slot: ParamSlot = Object.freeze({ fqn: p.fqn, shape: Object.freeze([...p.shape]), numel, offset });
    offset += numel;
    return slot;
  });
  const shardNumel = Math.ceil(offset / shards);
  return Object.freeze({ slots: Object.freeze(slots), numel: offset, paddedNumel: shardNumel * shards, shards, shardNumel });
}

/** The pieces of every parameter that shard `rank` holds, in flat order (empty pieces included, so each parameter has one). */
export function segmentsOf(layout: UnitLayout, rank: number): Segment[] {
  const lo = rank * layout.shardNumel;
  const hi = lo + layout.shardNumel;
  return layout.slots.map((slot) => {
    // The intersection of [offset, offset + numel) with [lo, hi); an empty one sits at the
    // parameter's edge nearest the slice, so ranges stay inside the parameter.
    const clamp = (x: number): number => Math.min(Math.max(x, 0), slot.numel);
    const start = clamp(lo - slot.offset);
    const end = Math.max(start, clamp(hi - slot.offset));
    const localOffset = Math.min(Math.max(slot.offset + start - lo, 0), layout.shardNumel);
    return { slot, start, end, localOffset };
  });
}

/** The unit path owning a parameter: the longest of `paths` its name lies under, "" (the root unit) when none. */
export function owningUnit(fqn: string, paths: readonly string[]): string {
  let best = "";
  for (const p of paths) if (p !== "" && fqn.startsWith(`${p}.`) && p.length > best.length) best = p;
  return best;
}
