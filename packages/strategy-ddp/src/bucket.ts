/**
 * Gradient buckets (DESIGN.md decision 5): parameters are grouped, in reverse registration order
 * (roughly the order backward produces their gradients), into buckets of at most `capBytes`, and
 * each bucket owns ONE flat contiguous buffer holding the gradients of its parameters back to
 * back. One all-reduce per bucket moves a whole buffer instead of many small tensors.
 *
 * With `gradientAsBucketView`, each parameter's `.grad` is a view into the buffer, so the autograd
 * engine accumulates straight into it (it adds into an existing `.grad` in place) and no copy is
 * made before or after the all-reduce. Without it, gradients are copied in before and out after.
 */
import { type DType, type Tensor, contiguousStrides, itemsize, noGrad, scope, zeros } from "@fulgur/tensor";

/** What bucket assignment needs to know of a parameter. */
export interface ParamInfo {
  readonly numel: number;
  readonly dtype: DType;
  readonly device: string;
}

/**
 * Assigns parameters (by index) to buckets of at most `capBytes`, walking them in reverse order.
 * Only parameters of the same dtype and device share a bucket (one buffer has one dtype); a
 * parameter larger than the cap gets a bucket of its own. Buckets come back in the order their
 * first parameter is met, i.e. the order backward is expected to fill them.
 */
export function assignBuckets(params: readonly ParamInfo[], capBytes: number): number[][] {
  if (!(capBytes > 0)) throw new RangeError(`assignBuckets: capBytes must be > 0, got ${capBytes}`);
  const open = new Map<string, { indices: number[]; bytes: number }>();
  const closed: number[][] = [];
  for (let i = params.length - 1; i >= 0; i--) {
    const p = params[i];
    const key = `${p.device}|${p.dtype}`;
    const bytes = p.numel * itemsize(p.dtype);
    let bucket = open.get(key);
    if (bucket && bucket.indices.length > 0 && bucket.bytes + bytes > capBytes) {
      closed.push(bucket.indices);
      bucket = undefined;
    }
    if (!bucket) {
      bucket = { indices: [], bytes: 0 };
      open.set(key, bucket);
    }
    bucket.indices.push(i);
    bucket.bytes += bytes;
  }
  for (const b of open.values()) if (b.indices.length > 0) closed.push(b.indices);
  // Indices within a bucket descend; the bucket whose first parameter comes latest goes first.
  return closed.sort((a, b) => b[0] - a[0]);
}

/** One parameter's place in its bucket. */
export interface BucketSlot {
  readonly name: string;
  readonly param: Tensor;
  /** Element offset of the parameter's gradient in the bucket buffer. */
  readonly offset: number;
  readonly numel: number;
}

export class GradBucket {
  /** The flat gradient buffer; lives outside every scope until `dispose()`. */
  readonly buffer: Tensor;
  readonly slots: readonly BucketSlot[];
  readonly numel: number;
  /** Views of `buffer` shaped like each parameter (gradientAsBucketView), in slot order. */
  private views: (Tensor | null)[];

  constructor(
    readonly index: number,
    members: readonly { name: string; param: Tensor }[],
    readonly asView: boolean,
  ) {
    if (members.length === 0) throw new RangeError("GradBucket: a bucket needs at least one parameter");
    const first = members[0].param;
    let offset = 0;
    const slots: BucketSlot[] = [];
    for (const m of members) {
      if (m.param.dtype !== first.dtype || m.param.device !== first.device) {
        throw new TypeError(`GradBucket: ${m.name} is ${m.param.dtype} on ${m.param.device}; bucket ${index} holds ${first.dtype} on ${first.device}`);
      }
      slots.push({ name: m.name, param: m.param, offset, numel: m.param.numel });
      offset += m.param.numel;
    }
    this.slots = slots;
    this.numel = offset;
    this.buffer = zeros([offset], { dtype: first.dtype, device: first.device }).untrack();
    this.views = slots.map(() => null);
    if (asView) {
      // Gradients accumulated before the strategy took over are kept: copied into the bucket.
      noGrad(() => {
        slots.forEach((s, i) => {
          const old = s.param.grad;
          const view = this.makeView(i);
          if (old && !old.isDisposed) {
            view.copy_(old);
            old.dispose();
          }
          s.param.grad = view;
        });
      });
    }
  }

  get dtype(): DType {
    return this.buffer.dtype;
  }

  get bytes(): number {
    return this.numel * itemsize(this.buffer.dtype);
  }

  private makeView(i: number): Tensor {
    const s = this.slots[i];
    const view = this.buffer.viewAs(s.param.shape, contiguousStrides(s.param.shape), s.offset, false);
    this.views[i] = view;
    return view;
  }

  /** The view of slot i, or null when the bucket does not use views. */
  viewOf(i: number): Tensor | null {
    return this.views[i];
  }

  /** The flat region of slot i (a fresh untracked view; the caller disposes it). */
  private region(i: number): Tensor {
    const s = this.slots[i];
    return this.buffer.viewAs([s.numel], [1], s.offset, false);
  }

  /**
   * Makes sure every parameter's `.grad` is still its view: code that set `.grad` to null or to
   * another tensor (a plain `zeroGrad(true)`, a user) is repaired, keeping the values it meant.
   */
  rebindViews(): void {
    if (!this.asView) return;
    noGrad(() => scope(() => {
      this.slots.forEach((s, i) => {
        const view = this.views[i];
        const grad = s.param.grad;
        if (view && grad === view && !view.isDisposed) return;
        const region = this.region(i);
        try {
          if (grad && !grad.isDisposed) region.copy_(grad.reshape([s.numel]));
          else region.zero_();
        } finally {
          region.dispose();
        }
        if (grad && grad !== view && !grad.isDisposed) grad.dispose();
        if (view && !view.isDisposed) view.dispose();
        s.param.grad = this.makeView(i);
      });
    }));
  }

  /** Without views: copies each parameter's gradient into the buffer (zeros where there is none). */
  packGradients(): void {
    noGrad(() => scope(() => {
      this.slots.forEach((s, i) => {
        const region = this.region(i);
        try {
          const g = s.param.grad;
          if (g && !g.isDisposed) region.copy_(g.reshape([s.numel]));
          else region.zero_();
        } finally {
          region.dispose();
        }
      });
    }));
  }

  /** Without views: writes the reduced buffer back into each parameter's gradient. */
  unpackGradients(): void {
    noGrad(() => scope(() => {
      this.slots.forEach((s, i) => {
        const region = this.region(i);
        try {
          const g = s.param.grad;
          if (g && !g.isDisposed) g.copy_(region.reshape(s.param.shape));
          else s.param.grad = region.reshape(s.param.shape).clone();
        } finally {
          region.dispose();
        }
      });
    }));
  }

  /** Zeroes the gradients in place, keeping the views (what zeroGrad becomes under DDP). */
  zero(): void {
    noGrad(() => this.buffer.zero_());
  }

  /** Frees the buffer; parameters keep a standalone copy of their gradient. */
  dispose(): void {
    noGrad(() => {
      this.slots.forEach((s, i) => {
        const view = this.views[i];
        if (view && s.param.grad === view) s.param.grad = view.clone().untrack();
        view?.dispose();
        this.views[i] = null;
      });
    });
    this.buffer.dispose();
  }
}
