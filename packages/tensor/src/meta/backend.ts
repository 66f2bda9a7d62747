/**
 * The meta backend: tensors with shapes, dtypes, strides and autograd state but no memory, so a
 * model of billions of parameters can be built on one rank and materialised a unit at a time
 * (DESIGN.md, decision 13). The frontend already infers every output's shape and dtype and
 * allocates it before calling a backend, so a backend whose allocations hold nothing and whose
 * kernels compute nothing gets every op's shapes for free.
 *
 * [Note: meta kernels record]
 * The kernels do not compute, but they do record: each call is appended to the log of the storages
 * it writes (meta/storage.ts). An initialiser is an ordinary composition of ops, `uniform_` is a
 * Philox draw (whose counters the frontend took from the generator, advancing it exactly as on a
 * real device), a scale, a shift and a copy_ into the parameter; so replaying the log on a real
 * backend runs the very kernels eager construction would have run, on the same counters, and
 * gives the same bits, in whatever order the parameters are materialised. Nothing in an
 * initialiser needs to know about meta, and any init a model adds (a scaled residual `mul_`, a
 * weight loaded with `copy_`) is replayed the same way. Recording costs a few small objects per op
 * and keeps the meta storages an entry reads reachable until the tensors that need them are
 * materialised or disposed.
 *
 * Reading values throws (`metaHasNoData`), and so does a call that mixes meta and real storages:
 * the kernel cannot record a real input (its contents could change before the replay).
 */
import type {
  AdamWHyper,
  Backend,
  BackendMemoryStats,
  BinaryOp,
  MatmulOptions,
  PhiloxState,
  ReduceOp,
  Storage,
  UnaryOp,
  View,
} from "../backend";
import type { DType, HostArray } from "../dtype";
import { type KernelName, type LogEntry, MATERIALISE_HINT, MetaStorage, RecordedView, metaHasNoData } from "./storage";

type MaybeView = View | null | undefined;

export class MetaBackend implements Backend {
  readonly name = "meta";
  readonly device = "meta";

  alloc(dtype: DType, length: number): MetaStorage {
    if (!Number.isInteger(length) || length < 0) throw new RangeError(`meta backend: cannot allocate ${length} elements`);
    return new MetaStorage(this, dtype, length);
  }

  free(storage: Storage): void {
    // Nothing to release; the log stays readable for the entries of other storages that read it.
    this.meta("free", storage);
  }

  /** Keeps a copy of the data, so that materialising gives it back (a mask buffer made with `tensor()`). */
  fromHost(data: HostArray, dtype: DType): MetaStorage {
    const s = this.alloc(dtype, data.length);
    s.log.push({ kind: "load", data: data.slice() });
    return s;
  }

  read(_view: View): HostArray {
    throw metaHasNoData("reading a tensor (item, toArray, toHost, or a copy to a real device)");
  }

  memoryStats(): BackendMemoryStats {
    return { allocated: 0, reserved: 0, peak: 0 };
  }

  resetPeak(): void {}

  synchronize(): void {}

  copy(src: View, dst: View): void {
    this.record("copy", [this.view("copy", src), this.view("copy", dst)], [dst]);
  }

  fill(dst: View, value: number): void {
    this.record("fill", [this.view("fill", dst), value], [dst]);
  }

  unary(op: UnaryOp, x: View, out: View, scalar?: number): void {
    this.record("unary", [op, this.view(op, x), this.view(op, out), scalar], [out]);
  }

  binary(op: BinaryOp, a: View, b: View, out: View): void {
    this.record("binary", [op, this.view(op, a), this.view(op, b), this.view(op, out)], [out]);
  }

  where(cond: View, a: View, b: View, out: View): void {
    this.record("where", this.views("where", [cond, a, b, out]), [out]);
  }

  reduce(op: ReduceOp, x: View, out: View): void {
    this.record("reduce", [op, this.view(op, x), this.view(op, out)], [out]);
  }

  matmul(a: View, b: View, out: View, options?: MatmulOptions): void {
    const o = options;
    // The options as given, their views recorded (keys that were absent stay absent).
    const recorded = o && Object.fromEntries(Object.entries(o).map(([k, v]) => [k, isView(v) ? this.view("matmul", v) : v]));
    this.record("matmul", [...this.views("matmul", [a, b, out]), recorded], [out, o?.geluAux, o?.outColSums, o?.aRowSums]);
  }

  softmax(x: View, out: View, log: boolean): void {
    this.record("softmax", [...this.views("softmax", [x, out]), log], [out]);
  }

  softmaxBackward(y: View, gy: View, gx: View, log: boolean): void {
    this.record("softmaxBackward", [...this.views("softmaxBackward", [y, gy, gx]), log], [gx]);
  }

  layerNorm(x: View, weight: View | null, bias: View | null, eps: number, out: View, mean: View, rstd: View): void {
    const w = "layerNorm";
    this.record(
      "layerNorm",
      [this.view(w, x), this.optional(w, weight), this.optional(w, bias), eps, ...this.views(w, [out, mean, rstd])],
      [out, mean, rstd],
    );
  }

  layerNormBackward(
    gy: View,
    x: View,
    weight: View | null,
    mean: View,
    rstd: View,
    gx: View | null,
    gw: View | null,
    gb: View | null,
    accumulateGx?: boolean,
  ): void {
    const w = "layerNormBackward";
    const args = [...this.views(w, [gy, x]), this.optional(w, weight), ...this.views(w, [mean, rstd]), this.optional(w, gx)];
    this.record(w, [...args, this.optional(w, gw), this.optional(w, gb), accumulateGx], [gx, gw, gb]);
  }

  embedding(weight: View, ids: View, out: View): void {
    this.record("embedding", this.views("embedding", [weight, ids, out]), [out]);
  }

  embeddingBackward(gy: View, ids: View, gw: View): void {
    this.record("embeddingBackward", this.views("embeddingBackward", [gy, ids, gw]), [gw]);
  }

  crossEntropy(logits: View, targets: View, ignoreIndex: number, loss: View, lse: View): void {
    const w = "crossEntropy";
    this.record(w, [...this.views(w, [logits, targets]), ignoreIndex, ...this.views(w, [loss, lse])], [loss, lse]);
  }

  crossEntropyBackward(logits: View, targets: View, lse: View, gloss: View, ignoreIndex: number, glogits: View): void {
    const w = "crossEntropyBackward";
    this.record(w, [...this.views(w, [logits, targets, lse, gloss]), ignoreIndex, this.view(w, glogits)], [glogits]);
  }

  attention(q: View, k: View, v: View, out: View, lse: View, causal: boolean, scale: number): void {
    this.record("attention", [...this.views("attention", [q, k, v, out, lse]), causal, scale], [out, lse]);
  }

  attentionBackward(
    q: View,
    k: View,
    v: View,
    out: View,
    lse: View,
    gout: View,
    gq: View,
    gk: View,
    gv: View,
    causal: boolean,
    scale: number,
  ): void {
    const w = "attentionBackward";
    this.record(w, [...this.views(w, [q, k, v, out, lse, gout, gq, gk, gv]), causal, scale], [gq, gk, gv]);
  }

  /** The counters were taken from the generator by the caller, as on any device: only they are kept. */
  random(kind: "uniform" | "normal", out: View, state: PhiloxState): void {
    this.record("random", [kind, this.view("random", out), { seed: state.seed, offset: state.offset }], [out]);
  }

  adamw(params: View[], grads: View[], expAvg: View[], expAvgSq: View[], hyper: AdamWHyper, lowPrecision?: readonly (View | null)[]): void {
    const w = "adamw";
    const lp = lowPrecision?.map((v) => this.optional(w, v));
    const args = [this.views(w, params), this.views(w, grads), this.views(w, expAvg), this.views(w, expAvgSq), { ...hyper }, lp];
    this.record(w, args, [...params, ...expAvg, ...expAvgSq, ...(lowPrecision ?? [])]);
  }

  // ---- recording ------------------------------------------------------------------------------

  /**
   * Appends one entry to the log of every distinct storage in `written`. The arguments were
   * recorded (their `at` taken) before this appends anything, so an in-place call's input is the
   * storage as it was before the call.
   */
  private record(method: KernelName, args: readonly unknown[], written: readonly MaybeView[]): void {
    const entry: LogEntry = { kind: "call", method, args };
    const seen: MetaStorage[] = [];
    for (const v of written) {
      if (!v) continue;
      const s = v.storage as MetaStorage;
      if (seen.includes(s)) continue;
      seen.push(s);
      s.log.push(entry);
    }
  }

  private view(op: string, v: View): RecordedView {
    const s = this.meta(op, v.storage);
    return new RecordedView(s, v.shape, v.strides, v.offset, s.log.length);
  }

  private views(op: string, vs: readonly View[]): RecordedView[] {
    return vs.map((v) => this.view(op, v));
  }

  /** A view recorded, or the null or undefined given in its place. */
  private optional(op: string, v: MaybeView): RecordedView | null | undefined {
    return v ? this.view(op, v) : v;
  }

  private meta(op: string, s: Storage): MetaStorage {
    if (s instanceof MetaStorage && s.backend === this) return s;
    throw new TypeError(
      `${op}: got a ${s.backend.name} tensor among meta tensors: meta tensors have no data and cannot meet real ones; ` +
        `${MATERIALISE_HINT}, or move the other tensor to "meta"`,
    );
  }
}

function isView(v: unknown): v is View {
  return typeof v === "object" && v !== null && "storage" in v && "strides" in v;
}

let instance: MetaBackend | null = null;

/** The process-wide meta backend. */
export function metaBackend(): MetaBackend {
  if (instance === null) instance = new MetaBackend();
  return instance;
}
