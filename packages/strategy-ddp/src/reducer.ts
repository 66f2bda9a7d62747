/**
 * The gradient reducer: DDP's heart. It owns the buckets, hooks every parameter's
 * post-accumulate-grad signal, and all-reduces (average) each bucket as soon as every parameter
 * in it has its final gradient, so communication overlaps the rest of backward (DESIGN.md
 * decisions 6 and 7). The optimizer step waits for the pending reductions (`finish`).
 *
 * [Note: when is a gradient final] This engine accumulates into a leaf once per use (a parameter
 * used twice gets two accumulations), unlike PyTorch's single AccumulateGrad node. So before a
 * synchronising backward the reducer walks the graph from the loss and counts, per parameter,
 * the edges that reach it: the gradient is final after that many accumulations. Parameters the
 * walk does not reach are unused this step (they are handled as PyTorch's
 * `find_unused_parameters` does), unless the graph holds an opaque node (activation
 * checkpointing recomputes its block inside backward, out of the walk's sight): then nothing is
 * reduced early and every bucket is reduced when backward has finished. `staticGraph` keeps the
 * counts of the first step and skips the walk afterwards.
 *
 * [Note: bucket order] Buckets are launched strictly in index order, as PyTorch does: a ready
 * bucket waits for the buckets before it. Collectives are matched by sequence number across
 * ranks, so every rank must issue them in the same order even if its gradients become ready in
 * another order (data-dependent graphs).
 */
import type { ProcessGroup, Work } from "@fulgur/core";
import type { HookHandle, Tensor } from "@fulgur/tensor";
import { GradBucket, assignBuckets } from "./bucket";

export interface ReducerOptions {
  /** Largest bucket in bytes. */
  readonly bucketCapBytes: number;
  readonly findUnusedParameters: boolean;
  readonly staticGraph: boolean;
  readonly gradientAsBucketView: boolean;
  /** Informational messages (bucket layout, usage hints); default: none. */
  readonly log?: (message: string) => void;
}

/** Raised when parameters got no gradient in a synchronising backward and findUnusedParameters is off. */
export class UnusedParametersError extends Error {
  override readonly name = "UnusedParametersError";
  constructor(readonly parameters: readonly string[]) {
    const shown = parameters.slice(0, 20).join(", ");
    const more = parameters.length > 20 ? ` (and ${parameters.length - 20} more)` : "";
    super(
      `ddp: ${parameters.length} parameter(s) got no gradient in this step: ${shown}${more}. ` +
        `Every rank must reduce every parameter's gradient; make each parameter take part in the loss, ` +
        `set requiresGrad false on the ones you do not train, or pass findUnusedParameters: true ` +
        `(strategy "ddp_find_unused_parameters_true") so their gradients are reduced as they are (zeros)`,
    );
  }
}

function formatBytes(n: number): string {
  return n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(2)} MiB` : `${(n / 1024).toFixed(1)} KiB`;
}

/** Where the reducer is within a step. */
type Phase = "idle" | "backward";

interface GraphNode {
  readonly name: string;
  readonly edges: readonly ({ readonly node: GraphNode } | { readonly leaf: Tensor } | null)[];
}

/** Nodes whose backward runs a graph of its own that the walk cannot see into. */
const OPAQUE_NODES = new Set(["Checkpoint"]);

/** What the walk of one backward graph found. */
interface GraphUse {
  /** Accumulations each managed parameter will receive (absent: none). */
  readonly counts: Map<Tensor, number>;
  readonly opaque: boolean;
}

/** Counts the edges from the graph of `root` to each parameter in `managed`. */
export function countParameterUses(root: Tensor, managed: ReadonlySet<Tensor>): GraphUse {
  const counts = new Map<Tensor, number>();
  const rootNode = root.gradNode as unknown as GraphNode | null;
  if (!rootNode) {
    if (managed.has(root)) counts.set(root, 1);
    return { counts, opaque: false };
  }
  let opaque = false;
  const seen = new Set<GraphNode>([rootNode]);
  const stack: GraphNode[] = [rootNode];
  while (stack.length > 0) {
    const node = stack.pop()!;
    if (OPAQUE_NODES.has(node.name)) opaque = true;
    for (const e of node.edges) {
      if (!e) continue;
      if ("leaf" in e) {
        if (managed.has(e.leaf)) counts.set(e.leaf, (counts.get(e.leaf) ?? 0) + 1);
      } else if (!seen.has(e.node)) {
        seen.add(e.node);
        stack.push(e.node);
      }
    }
  }
  return { counts, opaque };
}

interface ParamState {
  readonly bucket: GradBucket;
  readonly slot: number;
  /** Accumulations still expected in this backward; -1 when not tracked (reduced at finish). */
  remaining: number;
  /** Accumulations seen since the last optimizer step. */
  hits: number;
  ready: boolean;
}

export class Reducer {
  readonly buckets: readonly GradBucket[];
  private readonly params = new Map<Tensor, ParamState>();
  private readonly names = new Map<Tensor, string>();
  private readonly managed: ReadonlySet<Tensor>;
  private readonly hooks: HookHandle[] = [];
  private readonly works: (Work | null)[];
  private readonly pendingPerBucket: number[];
  private phase: Phase = "idle";
  private nextBucket = 0;
  /** Hooks fired since the last step (backward ran, synchronised or not). */
  private accumulatedSinceStep = false;
  /** Counts learnt in the first step, reused with staticGraph. */
  private staticUse: GraphUse | null = null;
  private stepsFinished = 0;
  /** Parameters the last synchronising backward's graph did not reach (-1: unknown, opaque graph). */
  private unusedInGraph = -1;
  private surplus: string | undefined;
  /** When true, backward accumulates locally and nothing is reduced (accumulation steps). */
  noSync = false;

  constructor(
    private readonly group: ProcessGroup,
    namedParameters: readonly [string, Tensor][],
    private readonly options: ReducerOptions,
  ) {
    const trainable = namedParameters.filter(([, p]) => p.requiresGrad);
    const assignment = assignBuckets(
      trainable.map(([, p]) => ({ numel: p.numel, dtype: p.dtype, device: p.device })),
      options.bucketCapBytes,
    );
    this.buckets = assignment.map(
      (indices, b) =>
        new GradBucket(
          b,
          indices.map((i) => ({ name: trainable[i][0], param: trainable[i][1] })),
          options.gradientAsBucketView,
        ),
    );
    for (const bucket of this.buckets) {
      bucket.slots.forEach((s, slot) => {
        this.params.set(s.param, { bucket, slot, remaining: -1, hits: 0, ready: false });
        this.names.set(s.param, s.name);
        this.hooks.push(s.param.registerPostAccumulateGradHook((leaf) => this.onAccumulated(leaf)));
      });
    }
    this.managed = new Set(this.params.keys());
    this.works = this.buckets.map(() => null);
    this.pendingPerBucket = this.buckets.map((b) => b.slots.length);
    options.log?.(
      `ddp: ${this.managed.size} parameters in ${this.buckets.length} gradient bucket(s) of at most ${formatBytes(options.bucketCapBytes)}: ` +
        this.buckets.map((b) => `${b.slots.length}×${b.dtype} ${formatBytes(b.bytes)}`).join(", "),
    );
  }

  /** Whether `p` is one of the parameters whose gradient lives in a bucket. */
  manages(p: Tensor): boolean {
    return this.params.has(p);
  }

  /**
   * Called right before backward runs on `loss`. Repairs detached gradient views; unless `noSync`,
   * counts each parameter's expected accumulations and marks unused ones ready (findUnusedParameters).
   */
  prepareForBackward(loss: Tensor): void {
    for (const b of this.buckets) b.rebindViews();
    if (this.noSync) return;
    if (this.phase === "backward") {
      throw new Error(
        "ddp: a second backward with gradient synchronisation ran before the optimizer step; " +
          "run the accumulation steps' backward inside noBackwardSync (the Trainer does this for accumulateGradBatches)",
      );
    }
    const use = this.options.staticGraph && this.staticUse ? this.staticUse : countParameterUses(loss, this.managed);
    if (this.options.staticGraph && !this.staticUse) this.staticUse = use;
    this.phase = "backward";
    this.surplus = undefined;
    this.nextBucket = 0;
    this.buckets.forEach((b, i) => {
      this.pendingPerBucket[i] = b.slots.length;
      this.works[i] = null;
    });
    const early: Tensor[] = [];
    this.unusedInGraph = use.opaque ? -1 : this.managed.size - use.counts.size;
    for (const [p, st] of this.params) {
      st.ready = false;
      const n = use.counts.get(p) ?? 0;
      // Opaque graphs: no early reduction at all, see [Note: when is a gradient final].
      st.remaining = use.opaque ? -1 : n > 0 ? n : this.options.findUnusedParameters ? 0 : -1;
      if (st.remaining === 0) early.push(p);
    }
    // Unused parameters are final already (zero, or what accumulation steps left in them).
    for (const p of early) this.markReady(p);
  }

  private onAccumulated(leaf: Tensor): void {
    const st = this.params.get(leaf);
    if (!st) return;
    st.hits++;
    this.accumulatedSinceStep = true;
    if (this.noSync || this.phase !== "backward" || st.remaining < 0) return;
    if (st.ready) {
      // More accumulations than the walk counted: the bucket may have left already.
      this.surplus ??= this.names.get(leaf);
      return;
    }
    if (--st.remaining === 0) this.markReady(leaf);
  }

  private markReady(p: Tensor): void {
    const st = this.params.get(p)!;
    if (st.ready) return;
    st.ready = true;
    if (--this.pendingPerBucket[st.bucket.index] === 0) this.launchReadyBuckets();
  }

  /** Launches every ready bucket from `nextBucket` on, in index order ([Note: bucket order]). */
  private launchReadyBuckets(): void {
    while (this.nextBucket < this.buckets.length && this.pendingPerBucket[this.nextBucket] === 0) {
      const bucket = this.buckets[this.nextBucket];
      if (!bucket.asView) bucket.packGradients();
      this.works[this.nextBucket] = this.group.allReduce(bucket.buffer, "avg");
      this.nextBucket++;
    }
  }

  /**
   * Completes gradient synchronisation before the optimizer step: launches what is left, waits for
   * every bucket, and raises on parameters that got no gradient (unless findUnusedParameters).
   */
  async finish(): Promise<void> {
    try {
      if (this.phase === "idle") {
        // Backward ran outside strategy.backward (or only under noBackwardSync): reduce everything now
        // rather than let the ranks' weights drift apart.
        if (!this.accumulatedSinceStep) return;
        this.phase = "backward";
        this.nextBucket = 0;
        this.pendingPerBucket.fill(0);
        this.launchReadyBuckets();
      } else {
        const unused: string[] = [];
        for (const [p, st] of this.params) {
          if (st.ready) continue;
          if (st.hits === 0 && !this.options.findUnusedParameters) unused.push(this.names.get(p)!);
        }
        if (unused.length > 0) {
          await this.waitAll();
          throw new UnusedParametersError(unused);
        }
        for (const p of this.params.keys()) this.markReady(p);
        this.launchReadyBuckets();
        if (this.surplus !== undefined) {
          await this.waitAll();
          throw new Error(
            `ddp: parameter ${this.surplus} received more gradient accumulations than its uses in the graph; ` +
              `its bucket was reduced too early. Is a parameter used both inside and outside an opaque node, or was backward re-entered?`,
          );
        }
      }
      await this.waitAll();
      for (const b of this.buckets) if (!b.asView) b.unpackGradients();
      this.afterStepHints();
    } finally {
      this.phase = "idle";
      this.accumulatedSinceStep = false;
      for (const st of this.params.values()) {
        st.hits = 0;
        st.ready = false;
        st.remaining = -1;
      }
    }
  }

  private async waitAll(): Promise<void> {
    // In launch order; the first failure is the one reported.
    for (let i = 0; i < this.works.length; i++) {
      const w = this.works[i];
      this.works[i] = null;
      if (w) await w.wait();
    }
  }

  private afterStepHints(): void {
    this.stepsFinished++;
    if (this.stepsFinished === 1 && this.options.findUnusedParameters && this.unusedInGraph === 0) {
      this.options.log?.(
        "ddp: findUnusedParameters is on but every parameter got a gradient in the first step; " +
          'strategy "ddp" (findUnusedParameters: false) reduces earlier and skips the check',
      );
    }
  }

  /** Zeroes every bucket in place; parameter gradients stay views into them. */
  zeroGrad(): void {
    for (const b of this.buckets) {
      if (b.asView) {
        b.rebindViews();
        b.zero();
      } else {
        for (const s of b.slots) {
          const g = s.param.grad;
          if (g) {
            s.param.grad = null;
            g.dispose();
          }
        }
      }
    }
  }

  /** Unhooks the parameters and frees the buckets (gradients are kept as standalone tensors). */
  remove(): void {
    for (const h of this.hooks) h.remove();
    this.hooks.length = 0;
    for (const b of this.buckets) b.dispose();
  }
}
