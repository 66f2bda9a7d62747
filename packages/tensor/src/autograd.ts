/**
 * Reverse-mode autograd. Each differentiable op that sees an input requiring grad records a Node
 * holding its backward function and the tensors it saved. Nodes are reference-counted by the
 * tensors they produced and by the nodes downstream of them, so a graph nobody can reach any more
 * releases its saved tensors at once (decision 2); backward releases each node's saved tensors as
 * soon as that node has run, which is what keeps peak memory at PyTorch's level.
 */
import type { Tensor } from "./tensor";
import { noGrad } from "./gradMode";
import { scope } from "./memory";

export type Edge = { readonly node: Node } | { readonly leaf: Tensor } | null;

/** What a backward function may ask of the engine while it runs. */
export interface BackwardContext {
  /**
   * Hands over the gradient the engine has already summed for input i from that input's other
   * consumers, when the engine holds it alone (no view or alias shares its memory), it is contiguous
   * and `accept` takes it. The backward then adds its own gradient into that tensor, in place, and
   * returns it for input i; the engine keeps it instead of adding the two in a separate pass (a
   * residual stream's layer norm does this). Returns null when there is none to take.
   */
  takePending(i: number, accept: (t: Tensor) => boolean): Tensor | null;
  /**
   * [Note: accumulating in the product] When input i is a leaf that already holds a gradient (the
   * second micro-batch of an accumulation window, or a sharded unit's zeroed flat buffer) which
   * `accept` takes, returns a view of that `.grad`: the backward adds its own gradient into it, in
   * place (a weight-gradient product with beta = 1 adds as it writes), and returns it for input i.
   * The engine then only runs the leaf's post-accumulate hooks, instead of a separate `add_` pass
   * over the gradient (12 bytes of traffic a parameter a micro-batch). Null when the leaf has no
   * gradient yet, or has gradient hooks that must see the new gradient alone.
   */
  takeLeafGrad(i: number, accept: (t: Tensor) => boolean): Tensor | null;
  /**
   * Whether input i's gradient is wanted in this call ([Note: the weight pass]). False in the input
   * pass of a split backward for a weight (a leaf not kept for now), and in the weight pass for
   * everything but the deferred weights. A backward that asks and gets false returns null for i and
   * skips its work; one that never asks computes everything, as before, and its weights get their
   * gradients at once.
   */
  wantsGrad(i: number): boolean;
  /** Input pass: tensors the weight pass of this node will need (e.g. a product it shares with the input gradient). */
  keepForWeightPass(...tensors: Tensor[]): void;
  /** Weight pass: what the input pass kept, in order (empty otherwise). */
  readonly kept: readonly Tensor[];
}

const NO_PENDING: BackwardContext = {
  takePending: () => null,
  takeLeafGrad: () => null,
  wantsGrad: () => true,
  keepForWeightPass: () => {},
  kept: [],
};

/** Receives the output gradient and the node's saved tensors (in the order they were saved). */
export type BackwardFn = (grad: Tensor, saved: readonly Tensor[], ctx: BackwardContext) => (Tensor | null)[];
export type GradHook = (grad: Tensor) => Tensor | void;

export class Node {
  private refs = 0;
  private released = false;
  private consumed = false;
  readonly gradHooks: GradHook[] = [];
  /** The tensor whose `.grad` should be set (retainGrad on a non-leaf). */
  retainTarget: Tensor | null = null;

  constructor(
    readonly name: string,
    public edges: Edge[],
    private backwardFn: BackwardFn | null,
    private saved: Tensor[],
  ) {
    for (const e of edges) if (e && "node" in e) e.node.retain();
  }

  retain(): void {
    this.refs++;
  }

  release(): void {
    if (--this.refs > 0 || this.released) return;
    this.released = true;
    this.releaseSaved();
    const edges = this.edges;
    this.edges = [];
    for (const e of edges) if (e && "node" in e) e.node.release();
  }

  releaseSaved(): void {
    for (const t of this.saved) t.dispose();
    this.saved = [];
    this.backwardFn = null;
  }

  /** `keepSaved`: the weight pass still needs the saved tensors (it releases them). */
  apply(grad: Tensor, retainGraph: boolean, ctx: BackwardContext = NO_PENDING, keepSaved = false): (Tensor | null)[] {
    if (this.consumed || !this.backwardFn) {
      throw new Error(
        `backward through ${this.name} a second time: its saved tensors were already freed; pass { retainGraph: true } to the first backward`,
      );
    }
    const grads = this.backwardFn(grad, this.saved, ctx);
    if (!retainGraph) {
      this.consumed = true;
      if (!keepSaved) this.releaseSaved();
    }
    return grads;
  }

  /** The deferred weight gradients of a split backward: the backward again, wanting only those. */
  applyWeights(grad: Tensor, ctx: BackwardContext, retainGraph: boolean): (Tensor | null)[] {
    if (!this.backwardFn) throw new Error(`the weight pass of ${this.name}: its saved tensors were already freed`);
    const grads = this.backwardFn(grad, this.saved, ctx);
    if (!retainGraph) this.releaseSaved();
    return grads;
  }
}

export interface BackwardOptions {
  retainGraph?: boolean;
}

/** Hooks the engine needs from Tensor without a circular import at load time. */
export interface LeafAccumulator {
  accumulate(leaf: Tensor, grad: Tensor): void;
  /** Adds the accumulations `accumulate` gathered ([Note: accumulations gathered] in tensor.ts). */
  flush(): void;
  /** A view of the leaf's gradient for a backward to add into in place, or null (see takeLeafGrad). */
  takeGrad(leaf: Tensor, accept: (t: Tensor) => boolean): Tensor | null;
  /** After a backward added into the leaf's gradient in place: what follows an accumulation. */
  accumulated(leaf: Tensor): void;
  /** A contiguous copy outside every scope. */
  copy(t: Tensor): Tensor;
  alias(t: Tensor): Tensor;
  add(a: Tensor, b: Tensor): Tensor;
}

let accumulator: LeafAccumulator | null = null;

export function setLeafAccumulator(a: LeafAccumulator): void {
  accumulator = a;
}

/**
 * [Note: the weight pass] A split backward (zero-bubble pipeline schedules: Qi et al. 2023) runs in
 * two passes. The input pass computes the gradients that flow to other nodes and to the leaves the
 * caller keeps for now (a pipeline stage's received activation, whose gradient is sent upstream;
 * a checkpoint's recomputation inputs, which `withGradientsNow` adds); every other leaf requiring
 * grad is a weight: a node whose backward asks `ctx.wantsGrad(i)` for it is told no, and the
 * engine keeps the node's output gradient and saved tensors. A backward that never asks computes
 * all its gradients in the input pass (correct, only not deferred). The weight pass runs the kept
 * nodes' backwards again, wanting only the deferred weights, in the order the input pass ran them,
 * and accumulates as an ordinary backward would, hooks included: the gradients are the same
 * products of the same operands, so they are bit-identical.
 *
 * Memory: a deferred node's saved tensors (for a linear layer its input, which an ordinary backward
 * frees as soon as the node has run), its output gradient (copied if other consumers share it) and
 * what it kept for the weight pass (the fused MLP's d(pre)) all live until the weight pass; for a
 * layer norm that is its input and output gradient, for an embedding its ids and output gradient.
 * A split backward therefore holds, per micro-batch between B and W, about one input and one output
 * gradient of every op with weights. Everything else is freed as in an ordinary backward.
 */
export class DeferredWeightGradients {
  /** Nodes whose weights wait, with the output gradient, the deferred inputs and what they kept. */
  readonly pending: { node: Node; grad: Tensor; inputs: ReadonlySet<number>; kept: Tensor[] }[] = [];
  private done = false;

  constructor(
    /** Leaves whose gradients the input pass computes at once. */
    readonly now: ReadonlySet<Tensor>,
    readonly retainGraph: boolean,
  ) {}

  /** Whether the input pass has left work for `run`. */
  get isEmpty(): boolean {
    return this.pending.length === 0;
  }

  /** The weight pass: every deferred weight gradient computed and accumulated. Runs once. */
  run(): void {
    if (this.done) throw new Error("DeferredWeightGradients.run: the weight pass already ran");
    this.done = true;
    const acc = accumulator!;
    noGrad(() => {
      for (const entry of this.pending.splice(0)) {
        const { node, grad, inputs, kept } = entry;
        const edges = node.edges;
        let taken = new Map<number, Tensor>();
        const ctx: BackwardContext = {
          takePending: () => null,
          takeLeafGrad: (i, accept) => {
            const e = edges[i];
            if (!e || !("leaf" in e) || !inputs.has(i) || taken.has(i)) return null;
            const g = acc.takeGrad(e.leaf, accept);
            if (g) taken.set(i, g);
            return g;
          },
          wantsGrad: (i) => inputs.has(i),
          keepForWeightPass: () => {},
          kept,
        };
        const returned = scope(() => node.applyWeights(grad, ctx, this.retainGraph));
        const owned = returned.map((r, i) => (r && inputs.has(i) ? acc.alias(r) : null));
        for (const r of new Set(returned)) r?.dispose();
        grad.dispose();
        for (const k of kept) k.dispose();
        edges.forEach((e, i) => {
          const gi = owned[i];
          if (!gi || !e || !("leaf" in e)) return gi?.dispose();
          if (taken.has(i)) {
            gi.dispose();
            acc.accumulated(e.leaf);
          } else acc.accumulate(e.leaf, gi);
        });
        taken = new Map();
        node.release();
      }
    });
    acc.flush();
  }

  /** Drops the deferred work without computing it (a failed step). */
  dispose(): void {
    for (const { node, grad, kept } of this.pending.splice(0)) {
      grad.dispose();
      for (const k of kept) k.dispose();
      node.releaseSaved();
      node.release();
    }
    this.done = true;
  }
}

let deferring: DeferredWeightGradients | null = null;

/**
 * Runs `fn` (which calls backward) as the input pass of a split backward: weight gradients that the
 * ops can defer are left for the returned handle's `run()`; `now` lists leaves whose gradients are
 * needed at once. See [Note: the weight pass].
 */
export function deferWeightGradients(fn: () => void, now: readonly Tensor[] = [], options: BackwardOptions = {}): DeferredWeightGradients {
  if (deferring) throw new Error("deferWeightGradients: already inside a split backward");
  const handle = new DeferredWeightGradients(new Set(now), options.retainGraph ?? false);
  deferring = handle;
  try {
    fn();
  } catch (e) {
    handle.dispose();
    throw e;
  } finally {
    deferring = null;
  }
  return handle;
}

/**
 * Runs `fn` (a backward nested in a node's backward) with `leaves` among the leaves whose gradients
 * a split backward's input pass computes at once. A checkpointed function's recomputation inputs
 * are leaves the checkpoint node returns the gradients of, not weights: deferring them would lose
 * the gradient of whatever fed the checkpoint.
 */
export function withGradientsNow(leaves: readonly Tensor[], fn: () => void): void {
  const split = deferring;
  if (!split) return fn();
  const now = split.now as Set<Tensor>;
  const added = leaves.filter((t) => !now.has(t));
  for (const t of added) now.add(t);
  try {
    fn();
  } finally {
    for (const t of added) now.delete(t);
  }
}

/**
 * Runs backward from `root` with `grad` (which the engine takes ownership of). Nodes run in reverse
 * topological order; each gradient is freed as soon as its consumer has used it.
 */
export function runBackward(rootNode: Node, grad: Tensor, options: BackwardOptions = {}): void {
  const acc = accumulator!;
  const retainGraph = options.retainGraph ?? false;
  const split = deferring;
  const deps = new Map<Node, number>();
  const stack: Node[] = [rootNode];
  const seen = new Set<Node>([rootNode]);
  while (stack.length) {
    const n = stack.pop()!;
    for (const e of n.edges) {
      if (!e || !("node" in e)) continue;
      deps.set(e.node, (deps.get(e.node) ?? 0) + 1);
      if (!seen.has(e.node)) {
        seen.add(e.node);
        stack.push(e.node);
      }
    }
  }
  const pending = new Map<Node, Tensor>([[rootNode, grad]]);
  const ready: Node[] = [rootNode];
  // The edges of the node whose backward is running: what `ctx.takePending(i)` refers to.
  let running: Edge[] = [];
  // The gradients handed out by `ctx.takeLeafGrad` during the running node's backward, by input.
  let taken = new Map<number, Tensor>();
  // Split backward: the weights of the running node that its backward was told to leave.
  let weightsLeft = false;
  let asked = new Set<number>();
  let kept: Tensor[] = [];
  const deferrable = (i: number): boolean => {
    const e = running[i];
    return split !== null && !!e && "leaf" in e && !split.now.has(e.leaf);
  };
  const ctx: BackwardContext = {
    wantsGrad: (i) => {
      if (!deferrable(i)) return true;
      asked.add(i);
      return false;
    },
    keepForWeightPass: (...tensors) => {
      if (weightsLeft) for (const t of tensors) kept.push(t.untrack());
    },
    kept: [],
    takeLeafGrad: (i, accept) => {
      const e = running[i];
      if (!e || !("leaf" in e) || taken.has(i)) return null;
      const g = acc.takeGrad(e.leaf, accept);
      if (g) taken.set(i, g);
      return g;
    },
    takePending: (i, accept) => {
      const e = running[i];
      if (!e || !("node" in e)) return null;
      const prev = pending.get(e.node);
      if (!prev || prev.storageRef.refCount !== 1 || prev.offset !== 0 || !prev.isContiguous() || !accept(prev)) return null;
      // Taken: the returned gradient for input i now carries both, and replaces it (below).
      pending.delete(e.node);
      return prev;
    },
  };
  // The root is kept alive while it runs even if the user disposes the output during a hook.
  noGrad(() => {
    while (ready.length) {
      const node = ready.pop()!;
      let g = pending.get(node)!;
      pending.delete(node);
      for (const hook of node.gradHooks) {
        const r = hook(g);
        if (r && r !== g) {
          g.dispose();
          g = acc.alias(r);
        }
      }
      if (node.retainTarget && !node.retainTarget.isDisposed) {
        node.retainTarget.setGradInternal(acc.alias(g));
      }
      const edges = node.edges;
      running = edges;
      taken = new Map();
      // Only a split backward allocates more per node: the ordinary one runs as it did before.
      weightsLeft = split !== null && edges.some((_, i) => deferrable(i));
      if (weightsLeft) {
        asked = new Set();
        kept = [];
      }
      // Each node runs in its own scope so its temporaries are freed before the next node runs.
      const returned = scope(() => node.apply(g, retainGraph, ctx, weightsLeft));
      if (weightsLeft) {
        if (asked.size > 0) {
          // The weight pass needs the node (its saved tensors) and this output gradient. A gradient
          // shared with other consumers is copied: holding its memory would stop a later backward
          // from adding into it in place (takePending), and the input pass must run as an
          // ordinary backward does.
          node.retain();
          const held = g.storageRef.refCount === 1 ? acc.alias(g) : acc.copy(g);
          split!.pending.push({ node, grad: held, inputs: asked, kept });
        } else {
          for (const k of kept) k.dispose();
          if (!retainGraph) node.releaseSaved();
        }
      }
      // Take an alias of each returned gradient so that the same tensor returned for two inputs
      // (add's backward) or the incoming gradient passed through are owned once per consumer.
      const owned = returned.map((r) => (r ? acc.alias(r) : null));
      for (const r of new Set(returned)) if (r && r !== g) r.dispose();
      g.dispose();
      edges.forEach((e, i) => {
        const gi = owned[i];
        if (!gi) return;
        if (!e) {
          gi.dispose();
          return;
        }
        if ("leaf" in e) {
          if (taken.has(i)) {
            if (returned[i] !== taken.get(i)) throw new Error(`${node.name}: backward took input ${i}'s gradient to add into but returned another tensor`);
            gi.dispose();
            acc.accumulated(e.leaf);
          } else acc.accumulate(e.leaf, gi);
          return;
        }
        const prev = pending.get(e.node);
        if (prev) {
          const sum = acc.add(prev, gi);
          prev.dispose();
          gi.dispose();
          pending.set(e.node, acc.alias(sum));
          sum.dispose();
        } else pending.set(e.node, gi);
        const left = deps.get(e.node)! - 1;
        deps.set(e.node, left);
        if (left === 0) ready.push(e.node);
      });
    }
  });
  for (const t of pending.values()) t.dispose();
  acc.flush();
}
