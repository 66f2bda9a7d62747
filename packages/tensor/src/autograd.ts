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
}

const NO_PENDING: BackwardContext = { takePending: () => null, takeLeafGrad: () => null };

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

  apply(grad: Tensor, retainGraph: boolean, ctx: BackwardContext = NO_PENDING): (Tensor | null)[] {
    if (this.consumed || !this.backwardFn) {
      throw new Error(
        `backward through ${this.name} a second time: its saved tensors were already freed; pass { retainGraph: true } to the first backward`,
      );
    }
    const grads = this.backwardFn(grad, this.saved, ctx);
    if (!retainGraph) {
      this.consumed = true;
      this.releaseSaved();
    }
    return grads;
  }
}

export interface BackwardOptions {
  retainGraph?: boolean;
}

/** Hooks the engine needs from Tensor without a circular import at load time. */
export interface LeafAccumulator {
  accumulate(leaf: Tensor, grad: Tensor): void;
  /** A view of the leaf's gradient for a backward to add into in place, or null (see takeLeafGrad). */
  takeGrad(leaf: Tensor, accept: (t: Tensor) => boolean): Tensor | null;
  /** After a backward added into the leaf's gradient in place: what follows an accumulation. */
  accumulated(leaf: Tensor): void;
  alias(t: Tensor): Tensor;
  add(a: Tensor, b: Tensor): Tensor;
}

let accumulator: LeafAccumulator | null = null;

export function setLeafAccumulator(a: LeafAccumulator): void {
  accumulator = a;
}

/**
 * Runs backward from `root` with `grad` (which the engine takes ownership of). Nodes run in reverse
 * topological order; each gradient is freed as soon as its consumer has used it.
 */
export function runBackward(rootNode: Node, grad: Tensor, options: BackwardOptions = {}): void {
  const acc = accumulator!;
  const retainGraph = options.retainGraph ?? false;
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
  const ctx: BackwardContext = {
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
      // Each node runs in its own scope so its temporaries are freed before the next node runs.
      const returned = scope(() => node.apply(g, retainGraph, ctx));
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
}
