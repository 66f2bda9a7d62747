/**
 * The CPU backend: host typed arrays, synchronous kernels, exact memory accounting.
 *
 * It is the reference every other backend is tested against, so it favours exact, documented
 * semantics; it is also what the CPU training demo runs on, so the kernels behind it are tuned
 * for single-core throughput. Freeing a storage twice throws: the frontend's refcounting must
 * never do it, and a loud failure here is how such a bug gets found.
 */
import type {
  AdamWHyper,
  Backend,
  BackendMemoryStats,
  BinaryOp,
  MatmulOptions,
  PendingWork,
  PhiloxState,
  ReduceOp,
  Storage,
  UnaryOp,
  View,
} from "../backend";
import type { DType, HostArray } from "../dtype";
import { allocHost, encodeElement, isStorageArray, itemsize } from "../dtype";
import { adamw } from "./adamw";
import { dataOf } from "./storage";
import { adamwBeside, adamwThreaded, addBeside } from "./optimizerThreads";
import { SharedBufferPool } from "./sharedBufferPool";
import { allocatesShared } from "./sharedMemory";
import { attention, attentionBackward } from "./attention";
import { crossEntropy, crossEntropyBackward } from "./crossEntropy";
import { binary, copy, fill, unary, where } from "./elementwise";
import { embedding, embeddingBackward } from "./embedding";
import { layerNorm, layerNormBackward } from "./layernorm";
import { matmul } from "./matmul";
import { random } from "./random";
import { reduce } from "./reduce";
import { softmax, softmaxBackward } from "./softmax";
import { CpuStorage } from "./storage";
import { gatherRaw, is16 } from "./strided";
import { OutOfMemoryError } from "../outOfMemory";

export class CpuBackend implements Backend {
  readonly name = "cpu";
  readonly device = "cpu";
  private allocated = 0;
  private peak = 0;
  /** Large freed shared buffers, for the next allocation of their size ([Note: reusing shared memory]). */
  private readonly pool = new SharedBufferPool();
  /** Bytes the backend may hold at once (a test hook, see setCpuMemoryLimit), or null. */
  private limit: number | null = null;

  alloc(dtype: DType, length: number): CpuStorage {
    return this.make(dtype, length, true);
  }

  /** A storage whose contents are undefined: the caller writes every element before reading (a storage read back from disk). */
  allocForOverwrite(dtype: DType, length: number): CpuStorage {
    return this.make(dtype, length, false);
  }

  private make(dtype: DType, length: number, zeroed: boolean): CpuStorage {
    if (!Number.isInteger(length) || length < 0) {
      throw new RangeError(`cpu backend: cannot allocate ${length} elements`);
    }
    const bytes = length * itemsize(dtype);
    if (this.limit !== null && this.allocated + bytes > this.limit) {
      throw new OutOfMemoryError(
        `cpu out of memory: could not allocate ${bytes} bytes with ${this.allocated} of the ${this.limit} allowed already allocated (the limit set by setCpuMemoryLimit)`,
        "cpu",
        bytes,
      );
    }
    // Shared memory (large storages, and whatever an offloading engine asks for) is what worker
    // threads update in place: the CPU optimizer's and the disk offload's. A large one reuses a
    // freed buffer when one of its size is kept ([Note: reusing shared memory]).
    const shared = allocatesShared(bytes);
    const reused = shared ? this.pool.take(bytes) : null;
    if (reused && zeroed) new Uint8Array(reused).fill(0);
    return this.track(new CpuStorage(this, dtype, length, allocHost(dtype, length, reused ?? shared)));
  }

  private track(s: CpuStorage): CpuStorage {
    this.allocated += s.byteLength;
    if (this.allocated > this.peak) this.peak = this.allocated;
    return s;
  }

  free(storage: Storage): void {
    if (!(storage instanceof CpuStorage) || storage.backend !== this) {
      throw new TypeError("cpu backend: free() got a storage that this backend did not allocate");
    }
    if (storage.freed) throw new Error("cpu backend: storage was already freed (double free)");
    const buffer = storage.data.buffer;
    storage.release();
    this.allocated -= storage.byteLength;
    if (buffer instanceof SharedArrayBuffer) this.pool.give(buffer);
  }

  /**
   * Copies `data` into a new storage. An array already in `dtype`'s storage format is copied as is
   * (16-bit floats as raw bits); any other array is taken as values and converted.
   */
  fromHost(data: HostArray, dtype: DType): CpuStorage {
    const s = this.alloc(dtype, data.length);
    if (isStorageArray(data, dtype) || !is16(dtype)) {
      // Same format copies bits; otherwise typed-array set converts (float32 rounding, int32 truncation).
      s.data.set(data as never);
    } else {
      for (let i = 0; i < data.length; i++) s.data[i] = encodeElement(dtype, data[i]);
    }
    return s;
  }

  /** Typed arrays and SharedArrayBuffers start zeroed. */
  readonly allocatesZeroed = true;

  read(view: View): HostArray {
    return gatherRaw(view);
  }

  /** A contiguous view's own memory, not a copy (the caller checked it is contiguous): what moving an offloaded slice to a GPU reads. */
  readShared(view: View): HostArray {
    const n = view.shape.reduce((a, b) => a * b, 1);
    return dataOf(view).subarray(view.offset, view.offset + n);
  }

  memoryStats(): BackendMemoryStats {
    return { allocated: this.allocated, reserved: this.allocated, peak: this.peak };
  }

  resetPeak(): void {
    this.peak = this.allocated;
  }

  /** See setCpuMemoryLimit. */
  setMemoryLimit(bytes: number | null): void {
    if (bytes !== null && (!Number.isSafeInteger(bytes) || bytes < 0)) {
      throw new RangeError(`setCpuMemoryLimit: bytes: got ${bytes}; expected a non-negative integer number of bytes, or null for no limit`);
    }
    this.limit = bytes;
  }

  synchronize(): void {
    // Every CPU kernel has finished by the time it returns.
  }

  copy(src: View, dst: View): void {
    copy(src, dst);
  }

  fill(dst: View, value: number): void {
    fill(dst, value);
  }

  unary(op: UnaryOp, x: View, out: View, scalar?: number): void {
    unary(op, x, out, scalar);
  }

  binary(op: BinaryOp, a: View, b: View, out: View): void {
    binary(op, a, b, out);
  }

  addMany(dsts: readonly View[], srcs: readonly View[]): void {
    dsts.forEach((d, i) => binary("add", d, srcs[i], d));
  }

  where(cond: View, a: View, b: View, out: View): void {
    where(cond, a, b, out);
  }

  reduce(op: ReduceOp, x: View, out: View): void {
    reduce(op, x, out);
  }

  matmul(a: View, b: View, out: View, options?: MatmulOptions): void {
    matmul(a, b, out, options);
  }

  softmax(x: View, out: View, log: boolean): void {
    softmax(x, out, log);
  }

  softmaxBackward(y: View, gy: View, gx: View, log: boolean): void {
    softmaxBackward(y, gy, gx, log);
  }

  layerNorm(x: View, weight: View | null, bias: View | null, eps: number, out: View, mean: View, rstd: View): void {
    layerNorm(x, weight, bias, eps, out, mean, rstd);
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
    accumulateGx = false,
  ): void {
    layerNormBackward(gy, x, weight, mean, rstd, gx, gw, gb, accumulateGx);
  }

  embedding(weight: View, ids: View, out: View): void {
    embedding(weight, ids, out);
  }

  embeddingBackward(gy: View, ids: View, gw: View): void {
    embeddingBackward(gy, ids, gw);
  }

  crossEntropy(logits: View, targets: View, ignoreIndex: number, loss: View, lse: View): void {
    crossEntropy(logits, targets, ignoreIndex, loss, lse);
  }

  crossEntropyBackward(
    logits: View,
    targets: View,
    lse: View,
    gloss: View,
    ignoreIndex: number,
    glogits: View,
  ): void {
    crossEntropyBackward(logits, targets, lse, gloss, ignoreIndex, glogits);
  }

  attention(q: View, k: View, v: View, out: View, lse: View, causal: boolean, scale: number): void {
    attention(q, k, v, out, lse, causal, scale);
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
    attentionBackward(q, k, v, out, lse, gout, gq, gk, gv, causal, scale);
  }

  random(kind: "uniform" | "normal", out: View, state: PhiloxState): void {
    random(kind, out, state);
  }

  adamw(params: View[], grads: View[], expAvg: View[], expAvgSq: View[], hyper: AdamWHyper, lowPrecision?: readonly (View | null)[]): void {
    if (!adamwThreaded(params, grads, expAvg, expAvgSq, hyper, lowPrecision)) adamw(params, grads, expAvg, expAvgSq, hyper, lowPrecision);
  }

  adamwBeside(params: View[], grads: View[], expAvg: View[], expAvgSq: View[], hyper: AdamWHyper, lowPrecision?: readonly (View | null)[]): PendingWork | null {
    return adamwBeside(params, grads, expAvg, expAvgSq, hyper, lowPrecision);
  }

  addBeside(dst: View, src: View): PendingWork | null {
    return addBeside(dst, src);
  }
}

let instance: CpuBackend | null = null;

/** The process-wide CPU backend (one set of memory counters for all CPU tensors). */
/**
 * Makes the CPU backend throw `OutOfMemoryError` when an allocation would take the bytes it holds
 * past `bytes` (null: no limit, the default): how tests run out of memory on purpose, as a GPU
 * would, to check what the error says.
 */
export function setCpuMemoryLimit(bytes: number | null): void {
  cpuBackend().setMemoryLimit(bytes);
}

export function cpuBackend(): CpuBackend {
  if (instance === null) instance = new CpuBackend();
  return instance;
}
