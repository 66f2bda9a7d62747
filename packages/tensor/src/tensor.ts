/**
 * The Tensor: a strided view onto a reference-counted storage, plus its autograd state. Methods are
 * thin calls into the op functions in `ops/`, which do the work through the device's Backend.
 */
import type { Backend, Storage, View } from "./backend";
import { type DType, type HostArray, decodeAll, isFloating } from "./dtype";
import { contiguousStrides, formatShape, isContiguous, numel } from "./shape";
import { type StorageRef, countTensor, keepInScope, trackInScope, untrack } from "./memory";
import { type BackwardOptions, type GradHook, Node, runBackward, setLeafAccumulator } from "./autograd";
import { isGradEnabled } from "./gradMode";
import { recordWrite, versionOf } from "./versions";
import * as ops from "./ops";

export type PostAccumulateGradHook = (leaf: Tensor) => void;

export interface HookHandle {
  remove(): void;
}

let nextId = 1;

export class Tensor implements View {
  readonly id = nextId++;
  private ref: StorageRef | null;
  private gradValue: Tensor | null = null;
  private node: Node | null = null;
  private requiresGradFlag = false;
  private leafHooks: GradHook[] = [];
  private postAccHooks: PostAccumulateGradHook[] = [];
  /** Optional label, shown in errors and by `toString()`. */
  name?: string;
  // Kept outside the storage reference so that metadata stays readable after dispose (a backward
  // closure may ask an input's dtype after the scope that made the input has freed it).
  readonly dtype: DType;
  // Changes only when `materialize` moves a meta tensor onto real memory (`rebind`).
  private deviceName: string;

  /** @internal Takes ownership of one reference to `ref`. Use the factory functions instead. */
  constructor(
    ref: StorageRef,
    readonly shape: readonly number[],
    readonly strides: readonly number[],
    readonly offset: number,
    track = true,
  ) {
    this.ref = ref;
    this.dtype = ref.storage.dtype;
    this.deviceName = ref.backend.device;
    countTensor(ref.backend.device, 1);
    if (track) trackInScope(this);
  }

  // ---- identity and layout -------------------------------------------------------------------

  /** "cpu", "cuda:0", "meta", ... */
  get device(): string {
    return this.deviceName;
  }

  get storage(): Storage {
    return this.liveRef().storage;
  }

  get backend(): Backend {
    return this.liveRef().backend;
  }

  get storageRef(): StorageRef {
    return this.liveRef();
  }

  get ndim(): number {
    return this.shape.length;
  }

  get numel(): number {
    return numel(this.shape);
  }

  size(dim?: number): number | readonly number[] {
    if (dim === undefined) return this.shape;
    return this.shape[dim < 0 ? dim + this.ndim : dim];
  }

  isContiguous(): boolean {
    return isContiguous(this.shape, this.strides);
  }

  get isDisposed(): boolean {
    return this.ref === null;
  }

  private liveRef(): StorageRef {
    if (!this.ref) throw new Error(`tensor ${this.describe()} was disposed and cannot be used`);
    return this.ref;
  }

  describe(): string {
    return `${this.name ? this.name + " " : ""}#${this.id} ${formatShape(this.shape)}`;
  }

  /**
   * @internal Points this tensor at another storage, keeping the object (so parameters stay the
   * objects optimizers and hooks hold), its shape, strides, offset and autograd state: how
   * `materialize` gives a meta tensor real memory. Takes ownership of one reference to `ref`, which
   * must have this tensor's dtype and cover its elements.
   */
  rebind(ref: StorageRef): void {
    const old = this.liveRef();
    if (ref.storage.dtype !== this.dtype || ref.storage.length < old.storage.length) {
      throw new Error(`internal: rebind of ${this.describe()} (${this.dtype}, ${old.storage.length} elements) to ${ref.storage.dtype} storage of ${ref.storage.length}`);
    }
    countTensor(old.backend.device, -1);
    countTensor(ref.backend.device, 1);
    this.ref = ref;
    this.deviceName = ref.backend.device;
    old.release();
  }

  /** @internal A new Tensor object over the same storage (a view), tracked by the current scope unless told. */
  viewAs(shape: readonly number[], strides: readonly number[], offset: number, track = true): Tensor {
    const ref = this.liveRef();
    ref.retain();
    return new Tensor(ref, shape, strides, offset, track);
  }

  // ---- memory --------------------------------------------------------------------------------

  /** Releases this tensor's hold on its storage (and its gradient's). Idempotent. */
  dispose(): void {
    if (!this.ref) return;
    const ref = this.ref;
    this.ref = null;
    countTensor(ref.backend.device, -1);
    if (this.node) {
      const n = this.node;
      this.node = null;
      n.release();
    }
    ref.release();
  }

  /** Keeps this tensor alive past the innermost scope; returns it. */
  keep(): this {
    keepInScope(this);
    return this;
  }

  /** Removes this tensor from every scope: it lives until `dispose()` (used for parameters and state). */
  untrack(): this {
    untrack(this);
    return this;
  }

  // ---- autograd ------------------------------------------------------------------------------

  get requiresGrad(): boolean {
    return this.requiresGradFlag;
  }

  set requiresGrad(flag: boolean) {
    this.requiresGrad_(flag);
  }

  requiresGrad_(flag = true): this {
    if (this.node) {
      if (!flag) throw new Error("requiresGrad: cannot turn off gradients of a non-leaf tensor; use detach()");
      return this;
    }
    if (flag && !isFloating(this.dtype)) {
      throw new TypeError(`requiresGrad: only floating tensors can require gradients, this one is ${this.dtype}`);
    }
    this.requiresGradFlag = flag;
    return this;
  }

  get isLeaf(): boolean {
    return this.node === null;
  }

  /** Name of the op that produced this tensor, or null for a leaf. */
  get gradFn(): string | null {
    return this.node?.name ?? null;
  }

  /** @internal */
  get gradNode(): Node | null {
    return this.node;
  }

  /** @internal Attaches the node that produced this tensor. */
  setGradNode(node: Node): void {
    node.retain();
    this.node = node;
    this.requiresGradFlag = true;
  }

  get grad(): Tensor | null {
    // An accumulation into this gradient may still be gathered ([Note: accumulations gathered]).
    flushIfGathered(this);
    return this.gradValue;
  }

  /** Replaces the gradient. The previous gradient is not disposed: `zeroGrad` in @fulgur/nn does that. */
  set grad(g: Tensor | null) {
    flushIfGathered(this);
    if (g && (g.dtype !== this.dtype || g.shape.length !== this.shape.length || g.shape.some((s, i) => s !== this.shape[i]))) {
      throw new TypeError(
        `grad: expected ${this.dtype} ${formatShape(this.shape)}, got ${g.dtype} ${formatShape(g.shape)}`,
      );
    }
    if (g) g.untrack();
    this.gradValue = g;
  }

  /** @internal Sets the gradient without checks (the engine's retainGrad path). */
  setGradInternal(g: Tensor): void {
    flushIfGathered(this);
    this.gradValue?.dispose();
    this.gradValue = g;
  }

  /** Keeps `.grad` of a non-leaf tensor after backward. */
  retainGrad(): this {
    if (this.node) this.node.retainTarget = this;
    return this;
  }

  /** fn(grad) runs when this tensor's gradient is computed; it may return a replacement. */
  registerHook(fn: GradHook): HookHandle {
    const list = this.node ? this.node.gradHooks : this.leafHooks;
    list.push(fn);
    return { remove: () => void list.splice(list.indexOf(fn) >>> 0, 1) };
  }

  /** On a leaf: fn(leaf) runs right after the leaf's `.grad` was accumulated (DDP's bucket-ready signal). */
  registerPostAccumulateGradHook(fn: PostAccumulateGradHook): HookHandle {
    if (this.node) throw new Error("registerPostAccumulateGradHook: only leaf tensors accumulate gradients");
    this.postAccHooks.push(fn);
    return { remove: () => void this.postAccHooks.splice(this.postAccHooks.indexOf(fn) >>> 0, 1) };
  }

  /** @internal */
  get leafGradHooks(): readonly GradHook[] {
    return this.leafHooks;
  }

  /** @internal */
  get postAccumulateGradHooks(): readonly PostAccumulateGradHook[] {
    return this.postAccHooks;
  }

  /** Computes gradients of this tensor with respect to every leaf that requires them. */
  backward(grad?: Tensor, options: BackwardOptions = {}): void {
    if (!this.requiresGradFlag) {
      throw new Error("backward: this tensor does not require grad and has no grad_fn (was it computed under noGrad?)");
    }
    let g: Tensor;
    if (grad) {
      if (grad.shape.length !== this.shape.length || grad.shape.some((s, i) => s !== this.shape[i])) {
        throw new TypeError(`backward: grad has shape ${formatShape(grad.shape)}, expected ${formatShape(this.shape)}`);
      }
      g = grad.viewAs(grad.shape, grad.strides, grad.offset, false);
    } else {
      if (this.numel !== 1) {
        throw new Error(`backward: grad can be implicitly created only for a single-element tensor, this one is ${formatShape(this.shape)}`);
      }
      g = ops.full(this.shape, 1, { dtype: this.dtype, device: this.device }).untrack();
    }
    if (!this.node) {
      leafAccumulator.accumulate(this, g);
      return;
    }
    runBackward(this.node, g, options);
  }

  /** A tensor sharing storage with this one, outside the graph. */
  detach(): Tensor {
    return this.viewAs(this.shape, this.strides, this.offset);
  }

  // ---- reading -------------------------------------------------------------------------------

  /** Contiguous host copy in storage format (bfloat16/float16 as raw bits). Waits for the device. */
  toHost(): HostArray {
    return this.backend.read(this);
  }

  /** Values as a flat row-major array of numbers. Waits for the device. */
  toArray(): number[] {
    return Array.from(decodeAll(this.dtype, this.toHost()));
  }

  toFloat64Array(): Float64Array {
    return decodeAll(this.dtype, this.toHost());
  }

  /** Values as nested arrays following the shape. */
  toNested(): unknown {
    const flat = this.toArray();
    if (this.ndim === 0) return flat[0];
    const build = (dim: number, offset: number): unknown[] => {
      const n = this.shape[dim];
      const stride = numel(this.shape.slice(dim + 1));
      const out: unknown[] = [];
      for (let i = 0; i < n; i++) {
        out.push(dim === this.ndim - 1 ? flat[offset + i] : build(dim + 1, offset + i * stride));
      }
      return out;
    };
    return build(0, 0);
  }

  item(): number {
    if (this.numel !== 1) throw new Error(`item: only single-element tensors have an item; this one is ${formatShape(this.shape)}`);
    return this.toArray()[0];
  }

  toString(): string {
    const n = this.numel;
    const head = `Tensor(${formatShape(this.shape)}, ${this.dtype}, ${this.device}${this.node ? `, grad_fn=${this.node.name}` : ""})`;
    if (this.isDisposed) return `${head} <disposed>`;
    if (n > 64 || this.deviceName === "meta") return head;
    return `${head} ${JSON.stringify(this.toNested())}`;
  }

  // ---- views -------------------------------------------------------------------------------

  reshape(...shape: (number | readonly number[])[]): Tensor {
    return ops.reshape(this, flatArgs(shape));
  }
  view(...shape: (number | readonly number[])[]): Tensor {
    return ops.view(this, flatArgs(shape));
  }
  transpose(d0: number, d1: number): Tensor {
    return ops.transpose(this, d0, d1);
  }
  permute(...dims: (number | readonly number[])[]): Tensor {
    return ops.permute(this, flatArgs(dims));
  }
  t(): Tensor {
    if (this.ndim !== 2) throw new Error(`t(): expects a 2-D tensor, got ${formatShape(this.shape)}`);
    return ops.transpose(this, 0, 1);
  }
  slice(dim: number, start: number, end?: number): Tensor {
    return ops.slice(this, dim, start, end);
  }
  narrow(dim: number, start: number, length: number): Tensor {
    return ops.slice(this, dim, start, start + length);
  }
  select(dim: number, index: number): Tensor {
    return ops.select(this, dim, index);
  }
  expand(...shape: (number | readonly number[])[]): Tensor {
    return ops.expand(this, flatArgs(shape));
  }
  unsqueeze(dim: number): Tensor {
    return ops.unsqueeze(this, dim);
  }
  squeeze(dim?: number): Tensor {
    return ops.squeeze(this, dim);
  }
  flatten(start = 0, end = -1): Tensor {
    return ops.flatten(this, start, end);
  }
  contiguous(): Tensor {
    return ops.contiguous(this);
  }
  clone(): Tensor {
    return ops.clone(this);
  }

  // ---- math ----------------------------------------------------------------------------------

  add(o: Tensor | number): Tensor {
    return ops.add(this, o);
  }
  sub(o: Tensor | number): Tensor {
    return ops.sub(this, o);
  }
  mul(o: Tensor | number): Tensor {
    return ops.mul(this, o);
  }
  div(o: Tensor | number): Tensor {
    return ops.div(this, o);
  }
  pow(o: Tensor | number): Tensor {
    return ops.pow(this, o);
  }
  neg(): Tensor {
    return ops.neg(this);
  }
  exp(): Tensor {
    return ops.exp(this);
  }
  log(): Tensor {
    return ops.log(this);
  }
  sqrt(): Tensor {
    return ops.sqrt(this);
  }
  rsqrt(): Tensor {
    return ops.rsqrt(this);
  }
  tanh(): Tensor {
    return ops.tanh(this);
  }
  gelu(): Tensor {
    return ops.gelu(this);
  }
  relu(): Tensor {
    return ops.relu(this);
  }
  sigmoid(): Tensor {
    return ops.sigmoid(this);
  }
  abs(): Tensor {
    return ops.abs(this);
  }
  square(): Tensor {
    return ops.square(this);
  }
  sum(dims?: number | readonly number[], keepDim = false): Tensor {
    return ops.sum(this, dims, keepDim);
  }
  mean(dims?: number | readonly number[], keepDim = false): Tensor {
    return ops.mean(this, dims, keepDim);
  }
  max(dims?: number | readonly number[], keepDim = false): Tensor {
    return ops.max(this, dims, keepDim);
  }
  min(dims?: number | readonly number[], keepDim = false): Tensor {
    return ops.min(this, dims, keepDim);
  }
  argmax(dim: number, keepDim = false): Tensor {
    return ops.argmax(this, dim, keepDim);
  }
  softmax(dim = -1): Tensor {
    return ops.softmax(this, dim);
  }
  logSoftmax(dim = -1): Tensor {
    return ops.logSoftmax(this, dim);
  }
  matmul(o: Tensor): Tensor {
    return ops.matmul(this, o);
  }
  maskedFill(mask: Tensor, value: number): Tensor {
    return ops.maskedFill(this, mask, value);
  }
  eq(o: Tensor | number): Tensor {
    return ops.compare("eq", this, o);
  }
  ne(o: Tensor | number): Tensor {
    return ops.compare("ne", this, o);
  }
  lt(o: Tensor | number): Tensor {
    return ops.compare("lt", this, o);
  }
  le(o: Tensor | number): Tensor {
    return ops.compare("le", this, o);
  }
  gt(o: Tensor | number): Tensor {
    return ops.compare("gt", this, o);
  }
  ge(o: Tensor | number): Tensor {
    return ops.compare("ge", this, o);
  }
  /** Converts to a dtype or moves to a device. */
  to(target: DType | string): Tensor {
    return ops.to(this, target);
  }
  cast(dtype: DType): Tensor {
    return ops.cast(this, dtype);
  }

  // ---- in place (no autograd) --------------------------------------------------------------

  private checkInPlace(op: string): void {
    if (isGradEnabled() && this.requiresGradFlag) {
      throw new Error(
        `${op}: a tensor that requires grad cannot be modified in place while gradients are recorded; wrap the update in noGrad()`,
      );
    }
    this.markModified();
  }

  /**
   * Says this tensor's memory was written other than through its in-place methods (a backend call,
   * a collective into its storage), so values derived from it, such as autocast's low-precision
   * copy of a parameter, are recomputed. The in-place methods call it themselves.
   *
   * Versions are per element range ([Note: range versions] in versions.ts): this stamps the range
   * this tensor covers, from its lowest to its highest element. Values derived from other ranges of
   * the same storage (another parameter in the same flat buffer) stay current; marking a view of the
   * whole storage (the flat buffer itself, after an all-gather into it) makes every one stale.
   */
  markModified(): this {
    recordWrite(this.storageRef.versions, this);
    return this;
  }

  /** The version of the element range this tensor covers: it changes whenever a write overlaps it. */
  get version(): number {
    return versionOf(this.storageRef.versions, this);
  }

  /** Copies src (broadcast, cast) into this tensor's memory. */
  copy_(src: Tensor): this {
    this.checkInPlace("copy_");
    ops.copyInto(src, this);
    return this;
  }
  fill_(value: number): this {
    this.checkInPlace("fill_");
    this.backend.fill(this, value);
    return this;
  }
  zero_(): this {
    return this.fill_(0);
  }
  /** this += alpha * other */
  add_(other: Tensor | number, alpha = 1): this {
    this.checkInPlace("add_");
    ops.addInto(this, other, alpha);
    return this;
  }
  mul_(other: Tensor | number): this {
    this.checkInPlace("mul_");
    ops.mulInto(this, other);
    return this;
  }
}

/**
 * Whether `x` is a tensor, checked by shape rather than `instanceof` so that tensors made by another
 * copy of this package count too (DESIGN.md, decision 11).
 */
export function isTensor(x: unknown): x is Tensor {
  return typeof x === "object" && x !== null && typeof (x as Tensor).backward === "function" && Array.isArray((x as Tensor).shape);
}

function flatArgs(args: (number | readonly number[])[]): number[] {
  if (args.length === 1 && Array.isArray(args[0])) return [...(args[0] as readonly number[])];
  return args as number[];
}

/**
 * [Note: accumulations gathered] Accumulating micro-batches (the Trainer's accumulateGradBatches,
 * every pipeline schedule) adds each backward's gradient into the one its leaf already holds. The
 * big ones (a linear layer's weight) are added inside their products (`takeLeafGrad`); every other
 * leaf (biases, layer-norm weights, embeddings' positions) took an elementwise add of its own, which
 * at the 1b GPT's shapes is 132 tiny kernels a micro-batch, each costing the GPU far more in launch
 * than in work (about 7 µs for 2048 floats; 1.7% of a pipelined 1b step). So a float32 add into a
 * contiguous gradient of a leaf with no post-accumulate hook (hooks see the sum at once: DDP's and
 * FSDP's reductions start there) is gathered instead, and the backward's end adds all of them with
 * one `Backend.addMany` per backend. Anything that looks at such a gradient first (its getter, the
 * engine handing it to a product to add into, a second add into the same leaf) adds what was
 * gathered, in order, before it proceeds: every value is the one the adds made one at a time, to
 * the bit.
 */
const gathered = {
  leaves: new Set<Tensor>(),
  adds: [] as { dst: Tensor; src: Tensor }[],
};

/** Adds what was gathered when `leaf` has an accumulation among it: before its gradient is read or replaced. */
function flushIfGathered(leaf: Tensor): void {
  if (gathered.leaves.size !== 0 && gathered.leaves.has(leaf)) flushGatheredAccumulations();
}

/** Adds every gathered accumulation ([Note: accumulations gathered]), one `addMany` per backend. */
export function flushGatheredAccumulations(): void {
  if (gathered.adds.length === 0) return;
  const adds = gathered.adds.splice(0);
  gathered.leaves.clear();
  const byBackend = new Map<Backend, typeof adds>();
  for (const a of adds) {
    const list = byBackend.get(a.dst.backend) ?? [];
    list.push(a);
    byBackend.set(a.dst.backend, list);
  }
  try {
    for (const [backend, list] of byBackend) {
      backend.addMany!(
        list.map((a) => a.dst),
        list.map((a) => a.src),
      );
      for (const a of list) a.dst.markModified();
    }
  } finally {
    for (const a of adds) a.src.dispose();
  }
}

/** Whether an accumulation of `g` into `existing` may wait for the backward's end. */
function gatherable(leaf: Tensor, existing: Tensor, g: Tensor): boolean {
  return (
    leaf.postAccumulateGradHooks.length === 0 &&
    existing.dtype === "float32" &&
    g.dtype === "float32" &&
    existing.backend === g.backend &&
    existing.backend.addMany !== undefined &&
    existing.isContiguous() &&
    g.isContiguous() &&
    existing.shape.length === g.shape.length &&
    existing.shape.every((d, i) => d === g.shape[i])
  );
}

/** Gradient accumulation into leaves, used by the autograd engine. */
export const leafAccumulator = {
  flush(): void {
    flushGatheredAccumulations();
  },
  accumulate(leaf: Tensor, grad: Tensor): void {
    let g = grad;
    for (const hook of leaf.leafGradHooks) {
      const r = hook(g);
      if (r && r !== g) {
        g.dispose();
        g = r.viewAs(r.shape, r.strides, r.offset, false);
      }
    }
    if (g.dtype !== leaf.dtype) {
      const c = ops.cast(g, leaf.dtype);
      g.dispose();
      g = c.viewAs(c.shape, c.strides, c.offset, false);
      c.dispose();
    }
    // (Reading leaf.grad first adds anything already gathered for this leaf.)
    const existing = leaf.grad;
    if (existing && !existing.isDisposed && gatherable(leaf, existing, g)) {
      gathered.adds.push({ dst: existing, src: g });
      gathered.leaves.add(leaf);
      return;
    }
    if (existing && !existing.isDisposed) {
      existing.add_(g);
      g.dispose();
    } else if (g.isContiguous() && g.storageRef.refCount === 1 && g.offset === 0 && g.numel === g.storage.length) {
      // Nobody else holds this gradient's storage: take it instead of copying.
      leaf.setGradInternal(g);
    } else {
      const c = ops.contiguousCopy(g).untrack();
      g.dispose();
      leaf.setGradInternal(c);
    }
    for (const hook of leaf.postAccumulateGradHooks) hook(leaf);
  },
  takeGrad(leaf: Tensor, accept: (t: Tensor) => boolean): Tensor | null {
    // (Reading leaf.grad adds anything gathered for it before a product adds into it.)
    const existing = leaf.grad;
    if (!existing || existing.isDisposed || leaf.leafGradHooks.length > 0 || !existing.isContiguous() || !accept(existing)) return null;
    return existing.viewAs(existing.shape, existing.strides, existing.offset, false);
  },
  accumulated(leaf: Tensor): void {
    // The backward wrote through the tensor API's back door (the product's beta): stamp the write
    // so values derived from the gradient are known stale.
    leaf.grad!.markModified();
    for (const hook of leaf.postAccumulateGradHooks) hook(leaf);
  },
  alias(t: Tensor): Tensor {
    return t.viewAs(t.shape, t.strides, t.offset, false);
  },
  copy(t: Tensor): Tensor {
    return ops.contiguousCopy(t).untrack();
  },
  add(a: Tensor, b: Tensor): Tensor {
    return ops.add(a, b);
  },
};

setLeafAccumulator(leafAccumulator);

export function contiguousStridesOf(shape: readonly number[]): number[] {
  return contiguousStrides(shape);
}
