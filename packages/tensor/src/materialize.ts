/**
 * Materialising meta tensors: real memory on a device, filled by replaying what the meta backend
 * recorded of their storages ([Note: meta kernels record] in meta/backend.ts). The same kernels run
 * on the same inputs and the same Philox counters as eager construction would have run them, so a
 * model built on meta and materialised, in any order and one unit at a time, equals the model built
 * eagerly from the same seed bit for bit.
 *
 * A storage's value after its first k writes depends on the values of other storages at the points
 * its writes read them (the recorded views' `at`). `Replay` makes each such snapshot once, before
 * the memory it feeds is allocated, and frees it as soon as its last reader has run, so
 * materialising a parameter needs its own memory plus the temporaries of its initialiser, the
 * same as eager construction.
 */
import type { Backend } from "./backend";
import { getBackend, normalizeDevice } from "./device";
import { noGrad } from "./gradMode";
import { StorageRef, scope } from "./memory";
import { type LogEntry, MetaStorage, RecordedView } from "./meta";
import { dropAutocastCopy } from "./ops/autocastCopies";
import { Tensor } from "./tensor";

/**
 * Gives meta tensors real memory on `device` and the values their recorded writes produce, in
 * place: each tensor stays the same object (a parameter stays the one optimizers and hooks hold)
 * with the same shape, strides, offset and autograd state; only its storage changes. Tensors given
 * together that share a meta storage (views of one flat buffer) share the new storage; a meta
 * gradient is materialised with its tensor. Tensors not on meta are left as they are. Returns its
 * argument.
 */
export function materialize(tensor: Tensor, device: string): Tensor;
export function materialize(tensors: readonly Tensor[], device: string): readonly Tensor[];
export function materialize(target: Tensor | readonly Tensor[], device: string): Tensor | readonly Tensor[] {
  const dev = normalizeDevice(device);
  if (dev === "meta") throw new RangeError(`materialize: the device must hold data ("cpu", "cuda:0", ...); got "meta"`);
  const backend = getBackend(dev);
  const list: Tensor[] = Array.isArray(target) ? [...(target as readonly Tensor[])] : [target as Tensor];
  for (const t of [...list]) {
    const g = t.grad;
    if (g && !g.isDisposed && g.device === "meta") list.push(g);
  }
  const made = new Map<MetaStorage, StorageRef>();
  for (const t of list) {
    if (t.device !== "meta") continue;
    const s = t.storage as MetaStorage;
    let ref = made.get(s);
    if (ref) ref.retain();
    else {
      ref = new Replay(backend).run(s, s.log.length);
      made.set(s, ref);
    }
    // A copy autocast made while the tensor was on meta has no data either.
    dropAutocastCopy(t);
    t.rebind(ref);
  }
  return target;
}

/**
 * On a meta tensor: records `init` to run when `target` is materialised, at this point among its
 * other writes, with `inputs` as they are now. For initialisation that cannot be expressed as
 * tensor ops (a host-side transform of a random draw: `truncNormal_`); everything written with ops
 * is recorded without help. `init` gets real tensors with the recorded shapes, strides and offsets
 * and must write `target` in place; it runs under `noGrad` in a scope.
 */
export function recordInit(target: Tensor, inputs: readonly Tensor[], init: (target: Tensor, inputs: readonly Tensor[]) => void): void {
  for (const t of [target, ...inputs]) {
    if (t.device !== "meta") throw new TypeError(`recordInit: expects meta tensors; got one on ${t.device} (run the initialiser directly)`);
  }
  const view = (t: Tensor): RecordedView => {
    const s = t.storage as MetaStorage;
    return new RecordedView(s, t.shape, t.strides, t.offset, s.log.length);
  };
  const s = target.storage as MetaStorage;
  s.log.push({ kind: "init", view: view(target), inputs: inputs.map(view), run: init });
}

/** One snapshot (a storage after its first `at` writes): how many replays still read it, and its memory once made. */
interface Slot {
  uses: number;
  ref: StorageRef | null;
}

/** Replays meta storages on one real backend (see the header). */
class Replay {
  private readonly slots = new Map<MetaStorage, Map<number, Slot>>();

  constructor(private readonly backend: Backend) {}

  /** `s` after its first `upTo` writes, in new memory the caller owns. */
  run(s: MetaStorage, upTo: number): StorageRef {
    this.plan(s, upTo);
    return this.make(s, upTo);
  }

  /** Counts the reads of every snapshot making `s` up to `upTo` needs, so each is made once and freed after its last read. */
  private plan(s: MetaStorage, upTo: number): void {
    for (let k = 0; k < upTo; k++) {
      for (const rv of readsOf(s, k)) if (this.slot(rv).uses++ === 0) this.plan(rv.storage, rv.at);
    }
  }

  private make(s: MetaStorage, upTo: number): StorageRef {
    let out: StorageRef | null = null;
    for (let k = 0; k < upTo; k++) {
      const e = s.log[k];
      if (e.kind === "load") {
        // Only `fromHost` logs host data, as the first write of a new storage.
        out = new StorageRef(this.backend.fromHost(e.data, s.dtype), this.backend);
        continue;
      }
      const reads = readsOf(s, k);
      // Inputs first: their own temporaries are gone before the target's memory is taken.
      for (const rv of reads) {
        const slot = this.slot(rv);
        slot.ref ??= this.make(rv.storage, rv.at);
      }
      out ??= this.alloc(s);
      const target = out;
      const memoryOf = (rv: RecordedView): StorageRef => (rv.storage === s && rv.at === k ? target : this.slot(rv).ref!);
      this.apply(e, memoryOf);
      for (const rv of reads) {
        const slot = this.slot(rv);
        if (--slot.uses === 0) {
          slot.ref!.release();
          this.slots.get(rv.storage)!.delete(rv.at);
        }
      }
    }
    return out ?? this.alloc(s);
  }

  private apply(e: Exclude<LogEntry, { kind: "load" }>, memoryOf: (rv: RecordedView) => StorageRef): void {
    const b = this.backend;
    if (e.kind === "call") {
      const args = e.args.map((a) => realArg(a, memoryOf));
      (b[e.method] as unknown as (...args: unknown[]) => void).apply(b, args);
    } else {
      const wrap = (rv: RecordedView): Tensor => {
        const ref = memoryOf(rv);
        ref.retain();
        return new Tensor(ref, rv.shape, rv.strides, rv.offset, false);
      };
      const target = wrap(e.view);
      const inputs = e.inputs.map(wrap);
      try {
        noGrad(() => scope(() => e.run(target, inputs)));
      } finally {
        target.dispose();
        for (const t of inputs) t.dispose();
      }
    }
  }

  private alloc(s: MetaStorage): StorageRef {
    return new StorageRef(this.backend.alloc(s.dtype, s.length), this.backend);
  }

  private slot(rv: RecordedView): Slot {
    let byAt = this.slots.get(rv.storage);
    if (!byAt) {
      byAt = new Map();
      this.slots.set(rv.storage, byAt);
    }
    let slot = byAt.get(rv.at);
    if (!slot) {
      slot = { uses: 0, ref: null };
      byAt.set(rv.at, slot);
    }
    return slot;
  }
}

/** The snapshots entry k of `s` reads, each once: every recorded view but those of `s` itself at k (the memory being made). */
function readsOf(s: MetaStorage, k: number): RecordedView[] {
  const e = s.log[k];
  const out: RecordedView[] = [];
  const visit = (a: unknown): void => {
    if (a instanceof RecordedView) {
      if ((a.storage !== s || a.at !== k) && !out.some((o) => o.storage === a.storage && o.at === a.at)) out.push(a);
    } else if (Array.isArray(a)) a.forEach(visit);
    else if (isPlainObject(a)) Object.values(a).forEach(visit);
  };
  if (e.kind === "call") visit(e.args);
  else if (e.kind === "init") visit([e.view, ...e.inputs]);
  return out;
}

/** A recorded argument with its views pointed at real memory; other values as they are. */
function realArg(a: unknown, memoryOf: (rv: RecordedView) => StorageRef): unknown {
  if (a instanceof RecordedView) return { storage: memoryOf(a).storage, shape: a.shape, strides: a.strides, offset: a.offset };
  if (Array.isArray(a)) return a.map((x) => realArg(x, memoryOf));
  if (isPlainObject(a)) return Object.fromEntries(Object.entries(a).map(([k, v]) => [k, realArg(v, memoryOf)]));
  return a;
}

function isPlainObject(a: unknown): a is Record<string, unknown> {
  return typeof a === "object" && a !== null && Object.getPrototypeOf(a) === Object.prototype;
}
