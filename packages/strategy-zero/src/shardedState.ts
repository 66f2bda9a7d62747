/**
 * Whole values out of the engine's units and back, by parameter name (DESIGN.md decision 15), so
 * a ZeRO checkpoint is the same full checkpoint FSDP, DDP and single_device write and read: module
 * tensors by fully qualified name, optimizer state by parameter name through the kit's
 * namedOptimizerState. Every rank calls these together; the collectives run in unit order.
 *
 * Proposed for @fulgur/sharding (ShardingEngine.fullState, loadFullState, wholeSegmentStates, a
 * segment index and ShardingEngine.backward(run)), where FSDPStrategy would use them too instead of
 * its own copies; until then they live here, written against the engine's public API.
 */
import type { Module } from "@fulgur/nn";
import type { FlatUnit, ShardingEngine } from "@fulgur/sharding";
import type { StateEntry } from "@fulgur/strategy-kit";
import { type Tensor, noGrad } from "@fulgur/tensor";

/** Where an optimizer parameter lives: a slot of a unit. */
export interface SlotRef {
  readonly unit: FlatUnit;
  /** The slot (parameter) index within the unit's layout. */
  readonly slot: number;
}

/** The parameters the optimizer steps (segments, or full-shape views of resident units), by identity. */
export class SegmentIndex {
  private readonly refs = new Map<Tensor, SlotRef>();

  constructor(readonly engine: ShardingEngine) {
    for (const unit of engine.units) {
      for (let slot = 0; slot < unit.optimParams.length; slot++) this.refs.set(unit.optimParams[slot], { unit, slot });
    }
  }

  locate(param: Tensor): SlotRef | undefined {
    return this.refs.get(param);
  }

  /** The fully qualified name of the parameter a segment belongs to. */
  nameOf(param: Tensor): string | undefined {
    const ref = this.refs.get(param);
    return ref && ref.unit.layout.slots[ref.slot].fqn;
  }

  /** This rank's part of a whole value of `param`'s parameter, shaped like `param`. */
  partOf(param: Tensor, whole: Tensor): Tensor {
    const ref = this.refs.get(param);
    if (!ref) throw new Error("sharded state: a tensor that is not one of the engine's parameters");
    return ref.unit.sliceOf(ref.slot, whole);
  }

  /** How many of `params` are not the engine's (an optimizer built before sharding holds stale tensors). */
  countForeign(params: Iterable<Tensor>): number {
    let n = 0;
    for (const p of params) if (!this.refs.has(p)) n++;
    return n;
  }
}

/**
 * The full module state: each unit gathered whole in turn (only one unit's full values exist at a
 * time on ranks other than 0). Rank 0 (`keep`) gets every parameter and buffer; others get nothing.
 */
export function gatherModuleState(engine: ShardingEngine, module: Module, keep: boolean): Record<string, Tensor> {
  const state: Record<string, Tensor> = {};
  for (const unit of engine.units) {
    const values = unit.fullValues();
    for (let i = 0; i < values.length; i++) {
      if (keep) state[unit.layout.slots[i].fqn] = values[i];
      else values[i].dispose();
    }
  }
  if (keep) for (const [name, buffer] of module.namedBuffers()) state[name] = buffer;
  return state;
}

/** Copies this rank's slices out of a full state (any strategy, any world size) and gathers kept units again. */
export function loadModuleState(engine: ShardingEngine, module: Module, state: Readonly<Record<string, Tensor>>, strategyName: string): void {
  const names = engine.units.flatMap((u) => u.layout.slots.map((s) => s.fqn));
  const absent = names.filter((n) => state[n] === undefined);
  if (absent.length > 0) {
    const shown = absent.slice(0, 3).join(", ") + (absent.length > 3 ? `, and ${absent.length - 3} more` : "");
    throw new Error(`${strategyName}: the checkpoint's module state lacks ${shown}; it was saved from another model`);
  }
  for (const unit of engine.units) unit.loadFull(unit.layout.slots.map((s) => state[s.fqn]));
  noGrad(() => {
    for (const [name, buffer] of module.namedBuffers()) if (state[name]) buffer.copy_(state[name]);
  });
  // The slices changed: units kept gathered (and the root unit) are gathered again.
  engine.afterStep();
}

/**
 * Each optimizer state segment made whole. Entries are taken in one order every rank agrees on
 * (unit order, then state name), and each run of one unit and one state name is one gather.
 */
export function wholeSegmentStates(index: SegmentIndex, entries: readonly StateEntry[]): Tensor[] {
  const unitOrder = new Map(index.engine.units.map((u, i) => [u, i] as const));
  const keyed = entries.map((entry, at) => {
    const ref = index.locate(entry.param);
    if (!ref) throw new Error(`sharded state: optimizer state of ${entry.name} belongs to no unit`);
    return { at, ref, state: entry.stateName, order: unitOrder.get(ref.unit)! };
  });
  keyed.sort((a, b) => a.order - b.order || (a.state < b.state ? -1 : a.state > b.state ? 1 : 0) || a.at - b.at);
  const whole: Tensor[] = new Array(entries.length);
  let start = 0;
  while (start < keyed.length) {
    let end = start + 1;
    while (end < keyed.length && keyed[end].order === keyed[start].order && keyed[end].state === keyed[start].state) end++;
    const run = keyed.slice(start, end);
    const gathered = run[0].ref.unit.gatherSegments(run.map((k) => ({ index: k.ref.slot, tensor: entries[k.at].tensor })));
    run.forEach((k, j) => (whole[k.at] = gathered[j]));
    start = end;
  }
  return whole;
}
