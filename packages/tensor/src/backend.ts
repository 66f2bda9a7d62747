/**
 * The Backend contract: everything a device must do for the tensor engine. The CPU backend in
 * `cpu/` is the reference; `@fulgur/accelerator-cuda` implements the same contract on GPUs and is
 * held to it by the shared conformance suite (`test/conformance.ts`).
 *
 * Conventions every method follows:
 * - Destination-passing: the caller allocates every output (`alloc`) and passes it as a `View`, so a
 *   backend never allocates behind the engine's back and in-place updates are the same call.
 * - Inputs are strided views and may be non-contiguous, broadcast (stride 0) or offset; outputs are
 *   contiguous unless a method says otherwise. dtype is the storage's.
 * - Methods may return before the work is done (a GPU queues it on a stream); `read` waits.
 * - Shapes are checked by the frontend; a backend may assume they agree.
 */
import type { DType, HostArray } from "./dtype";

/** Device memory owned by one backend. Opaque to everything but that backend. */
export interface Storage {
  readonly backend: Backend;
  readonly dtype: DType;
  /** Number of elements. */
  readonly length: number;
  readonly byteLength: number;
}

/** A strided window onto a storage: what every kernel reads and writes. */
export interface View {
  readonly storage: Storage;
  readonly shape: readonly number[];
  readonly strides: readonly number[];
  readonly offset: number;
}

export type UnaryOp =
  | "neg"
  | "exp"
  | "log"
  | "sqrt"
  | "rsqrt"
  | "tanh"
  | "gelu"
  | "relu"
  | "abs"
  | "sigmoid"
  | "reciprocal"
  | "square"
  /** x + scalar */
  | "add_scalar"
  /** x * scalar */
  | "mul_scalar"
  /** x ** scalar */
  | "pow_scalar"
  /** scalar - x: lets `1 - p` and friends stay one kernel */
  | "rsub_scalar";

export type BinaryOp =
  | "add"
  | "sub"
  | "mul"
  | "div"
  | "maximum"
  | "minimum"
  | "pow"
  /** (x, grad) -> grad * gelu'(x), tanh form */
  | "gelu_backward"
  /** (x, grad) -> x > 0 ? grad : 0 */
  | "relu_backward"
  | "eq"
  | "ne"
  | "lt"
  | "le"
  | "gt"
  | "ge";

export type ReduceOp = "sum" | "max" | "min" | "argmax";

export interface MatmulOptions {
  /** Added to every row of the product; shape [N]. */
  readonly bias?: View;
  /** Apply GELU (tanh form) after the bias: the epilogue a fused MLP needs. */
  readonly gelu?: boolean;
  /** out = alpha * a @ b + beta * out (beta = 1 accumulates, as weight gradients do). */
  readonly alpha?: number;
  readonly beta?: number;
  /**
   * With `gelu`: also store the pre-activation (the product plus bias, before GELU) here, a view of
   * out's shape. It is what the backward's `geluGradAux` reads, so a fused MLP keeps no other copy.
   */
  readonly geluAux?: View;
  /**
   * Multiply the product elementwise by GELU'(aux) (aux: a forward's `geluAux`, out's shape): the
   * GELU backward fused into the product that makes its input gradient. Not with bias or gelu.
   */
  readonly geluGradAux?: View;
  /** With `geluGradAux`: also write the column sums of the final out ([N]): that layer's bias gradient. */
  readonly outColSums?: View;
  /**
   * Also write a's row sums, rowSums[m] = sum over k of a[m, k] ([M]), the bias gradient when a is
   * the transposed output gradient of a linear layer (2-D products only). Overwritten, not added to.
   */
  readonly aRowSums?: View;
}

export interface AdamWHyper {
  readonly lr: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly eps: number;
  readonly weightDecay: number;
  /** 1-based step count after this update, for bias correction. */
  readonly step: number;
  readonly maximize?: boolean;
}

export interface BackendMemoryStats {
  /** Bytes in live storages. */
  readonly allocated: number;
  /** Bytes held from the device, live or cached. */
  readonly reserved: number;
  /** Highest `allocated` since the last reset. */
  readonly peak: number;
}

/**
 * A counter-based random stream (Philox4x32-10): value i of a draw depends only on (seed, offset + i),
 * so every backend produces the same numbers and a draw can be replayed for recomputation.
 */
export interface PhiloxState {
  readonly seed: bigint;
  readonly offset: number;
}

/** A host copy under way (`Backend.readIntoAsync`). */
export interface PendingRead {
  /** True once the values are in the host array (never blocks). */
  poll(): boolean;
  /** Blocks until the values are in the host array; idempotent. */
  wait(): void;
}

export interface Backend {
  /** "cpu", "cuda", ... */
  readonly name: string;
  /** "cpu", "cuda:0", ... */
  readonly device: string;

  // Memory
  alloc(dtype: DType, length: number): Storage;
  /**
   * Optional: a storage whose contents are undefined, for a caller that writes every element
   * before reading it (memory read back from disk); a backend that reuses memory skips clearing it.
   */
  allocForOverwrite?(dtype: DType, length: number): Storage;
  free(storage: Storage): void;
  fromHost(data: HostArray, dtype: DType): Storage;
  /** Contiguous copy of a view in storage format (16-bit floats as raw bits); waits for pending work. */
  read(view: View): HostArray;
  /**
   * Optional: a contiguous view's own memory, not a copy (a host backend's storage is a host array).
   * Moving a tensor to another device reads from it; copying a device tensor into a host one
   * writes into it (with `readInto` of the device's backend).
   */
  readShared?(view: View): HostArray;
  /** Optional: copies a view into a host array of exactly its size (the memory of a host tensor: `readShared`). */
  readInto?(view: View, out: HostArray): void;
  /**
   * Optional: page-locks a long-lived host array (an offloaded slice) so copies to and from it run
   * as direct DMA, with no staging copy and no host wait. Counted: each call needs one `unpinHost`.
   * While a copy is in flight the caller must not write the array (uploads) or read it (downloads
   * before their `wait`).
   */
  pinHost?(array: HostArray): void;
  unpinHost?(array: HostArray): void;
  /**
   * Optional: starts copying a view into a host array of exactly its size and returns at once; the
   * array holds the values after `wait()`. The copy runs beside later work on the device (it is
   * ordered after everything queued before it), so gradients come down while backward goes on.
   * The view may be freed at once (its memory is reused only after the copy), but must not be
   * written before `wait()`.
   */
  readIntoAsync?(view: View, out: HostArray): PendingRead;
  /** True when `alloc` returns zeroed memory (host arrays), so zeros need no fill. */
  readonly allocatesZeroed?: boolean;
  memoryStats(): BackendMemoryStats;
  resetPeak(): void;
  /** Waits for all queued work. */
  synchronize(): void;

  // Data movement
  /** dst[i] = cast(src[i]) elementwise over dst.shape; src is broadcast to it. dst may be strided. */
  copy(src: View, dst: View): void;
  /**
   * Optional: `copy`, queued beside the backend's compute work where it has such a thing (a second
   * CUDA stream), with dst's first use ordered after it. For a cast that should overlap the work
   * before its first use (autocast copies made again ahead of a unit's backward).
   */
  copyBeside?(src: View, dst: View): void;
  fill(dst: View, value: number): void;

  // Elementwise: `out` has the broadcast shape; inputs arrive already expanded to it (stride 0).
  unary(op: UnaryOp, x: View, out: View, scalar?: number): void;
  /** Floating a and b may differ in dtype: each is converted to out's dtype (the promoted one) on load. */
  binary(op: BinaryOp, a: View, b: View, out: View): void;
  /**
   * Optional: dsts[i] += srcs[i] for every i, as `binary("add", dst, src, dst)` would, in one go:
   * contiguous float32 views of equal length, no dst twice. Gradient accumulation into many small
   * leaves uses it ([Note: accumulations gathered] in tensor.ts), one launch instead of one a leaf.
   */
  addMany?(dsts: readonly View[], srcs: readonly View[]): void;
  /** out = cond != 0 ? a : b */
  where(cond: View, a: View, b: View, out: View): void;

  /** Reduces x into out, which has x's rank with size 1 on every reduced dimension. argmax: one dim, int32 out. */
  reduce(op: ReduceOp, x: View, out: View): void;

  /** out[b] = a[b] @ b[b] over the batch dim 0 (a: [B, M, K], b: [B, K, N] or broadcast, out: [B, M, N]). */
  matmul(a: View, b: View, out: View, options?: MatmulOptions): void;

  /** Softmax / log-softmax over the last dimension. */
  softmax(x: View, out: View, log: boolean): void;
  /** gx = softmax' given y and gy; for log-softmax, gx = gy - exp(y) * sum(gy). */
  softmaxBackward(y: View, gy: View, gx: View, log: boolean): void;

  /** Layer norm over the last dim; mean and rstd ([rows]) are saved for backward. weight/bias may be absent. */
  layerNorm(x: View, weight: View | null, bias: View | null, eps: number, out: View, mean: View, rstd: View): void;
  /**
   * gw and gb are accumulated into (+=); gx is overwritten, or added to with `accumulateGx` (the
   * input's gradient from its other consumers, summed in the same pass). Any of the three may be
   * absent: a split backward asks for gx alone, then for gw and gb alone, and gw and gb must come
   * out bit-identical to a call that computed all three.
   */
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
  ): void;

  /** out[i, :] = weight[ids[i], :]. ids int32 [N]; out [N, D]. */
  embedding(weight: View, ids: View, out: View): void;
  /** gw[ids[i], :] += gy[i, :]. */
  embeddingBackward(gy: View, ids: View, gw: View): void;

  /**
   * Per-row cross entropy: loss[i] = logsumexp(logits[i]) - logits[i, target[i]], 0 where the target is
   * ignoreIndex. lse [N] is saved for backward. logits [N, C], targets int32 [N].
   */
  crossEntropy(logits: View, targets: View, ignoreIndex: number, loss: View, lse: View): void;
  /** glogits[i] = gloss[i] * (softmax(logits[i]) - onehot(target[i])), 0 on ignored rows. */
  crossEntropyBackward(logits: View, targets: View, lse: View, gloss: View, ignoreIndex: number, glogits: View): void;

  /**
   * Scaled dot-product attention over [B, H, T, D] with an optional causal mask. lse [B, H, T] is saved
   * for backward so no [T, T] matrix needs to be kept.
   */
  attention(q: View, k: View, v: View, out: View, lse: View, causal: boolean, scale: number): void;
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
  ): void;

  /** Uniform [0, 1) or standard normal draws into a contiguous out, from the Philox stream. */
  random(kind: "uniform" | "normal", out: View, state: PhiloxState): void;

  /**
   * One fused AdamW update over many parameters (PyTorch's formula, decoupled weight decay).
   * params, expAvg and expAvgSq are updated in place; all views contiguous and of equal length per index.
   * `lowPrecision[i]`, when given, receives the updated params[i] rounded to its own dtype (the
   * copy autocast reads), written in the same pass.
   */
  adamw(params: View[], grads: View[], expAvg: View[], expAvgSq: View[], hyper: AdamWHyper, lowPrecision?: readonly (View | null)[]): void;

  /**
   * The same update started beside the calling thread (the CPU's worker threads), which returns at
   * once: the tensors are the update's until `wait()`. Tensors the threads cannot take (not in
   * shared memory) are updated at the call. Null, having done nothing, where the backend cannot
   * hand any of it out (then `adamw` runs it in place).
   */
  adamwBeside?(params: View[], grads: View[], expAvg: View[], expAvgSq: View[], hyper: AdamWHyper, lowPrecision?: readonly (View | null)[]): PendingWork | null;

  /**
   * `dst += src` started beside the calling thread, as `adamwBeside` is: null, having done
   * nothing, where the backend cannot (contiguous fp32 views of one size on the CPU's threads).
   */
  addBeside?(dst: View, src: View): PendingWork | null;
}

/** Work under way beside the calling thread. */
export interface PendingWork {
  /** True once it is done (never blocks). */
  poll(): boolean;
  /** Blocks until it is done; throws its error. Idempotent. */
  wait(): void;
}
