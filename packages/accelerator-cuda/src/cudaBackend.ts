/**
 * The CUDA implementation of the tensor engine's Backend contract (packages/tensor/src/backend.ts).
 *
 * Storage is a device pointer from the stream-ordered pool; every op is queued on the device's
 * compute stream and returns at once (DESIGN.md, decision 3); `read` and `synchronize` are the only
 * places the host waits, and they are where errors recorded by kernels (bad ids, bad targets)
 * surface. Ops follow the contract's conventions: destination-passing, strided inputs, contiguous
 * outputs (a strided output is computed into a temporary and copied). The op families live in
 * ops/*.ts; this class holds the device state and does memory and transfers itself.
 *
 * Constructing a CudaBackend touches no GPU: the device is opened by the first op.
 */
import type {
  AdamWHyper,
  Backend,
  BackendMemoryStats,
  BinaryOp,
  DType,
  HostArray,
  MatmulOptions,
  PendingRead,
  PhiloxState,
  ReduceOp,
  Storage,
  UnaryOp,
  View,
} from "@fulgur/tensor";
import { allocHost, isStorageArray, registerBackend } from "@fulgur/tensor";
import type { DeviceContext } from "./context";
import { deviceContext } from "./context";
import { parseDevice } from "./device";
import { CudaStorage, addressOf, awaitWrite, cudaStorageOf, ptrOf } from "./storage";
import { CudaEvent } from "./event";
import type { Stream } from "./stream";
import { check } from "./check";
import { cudaMemcpyDeviceToHost, cudaMemcpyHostToDevice, cudart } from "./ffi/cudart";
import { isPinned, pinHost, unpinHost } from "./hostPinning";
import { DTYPE_CODE, itemsizeOf } from "./ops/dtypes";
import { contiguousViewOf } from "./ops/common";
import { isContiguous, numelOf } from "./ops/layout";
import * as ew from "./ops/elementwise";
import { reduce } from "./ops/reduce";
import * as nn from "./ops/nn";
import { attention, attentionBackward } from "./ops/attention";
import { random } from "./ops/random";
import { addMany } from "./ops/accumulate";
import { adamw, globalNorm } from "./ops/optim";
import { LtContext, matmul } from "./ops/matmul";

/** The dtype a host array's values are when they are taken as values rather than storage bits. */
function valueDtypeOf(data: HostArray): DType | null {
  if (data instanceof Float32Array) return "float32";
  if (data instanceof Float64Array) return "float64";
  if (data instanceof Int32Array) return "int32";
  return null;
}

function bytesOf(a: HostArray): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

export class CudaBackend implements Backend {
  readonly name = "cuda";
  readonly device: string;
  readonly index: number;
  private ctxValue: DeviceContext | null = null;
  private ltValue: LtContext | null = null;

  constructor(device = "cuda:0") {
    this.index = parseDevice(device);
    this.device = `cuda:${this.index}`;
  }

  /** The device's context, made current (opened on first use). */
  get ctx(): DeviceContext {
    if (this.ctxValue === null) this.ctxValue = deviceContext(this.index);
    this.ctxValue.makeCurrent();
    return this.ctxValue;
  }

  /** @internal cuBLASLt state of this device. */
  lt(): LtContext {
    if (this.ltValue === null) this.ltValue = LtContext.create(this);
    return this.ltValue;
  }

  // ---- memory ------------------------------------------------------------------------------

  alloc(dtype: DType, length: number): CudaStorage {
    if (!Number.isSafeInteger(length) || length < 0) {
      throw new RangeError(`${this.device}: cannot allocate ${length} elements; expected a non-negative integer`);
    }
    if (DTYPE_CODE[dtype] === undefined) throw new TypeError(`${this.device}: unknown dtype ${JSON.stringify(dtype)}`);
    const ptr = this.ctx.allocator.alloc(length * itemsizeOf(dtype));
    return new CudaStorage(this, dtype, length, ptr);
  }

  free(storage: Storage): void {
    if (!(storage instanceof CudaStorage) || storage.backend !== this) {
      throw new TypeError(`${this.device}: free() got a storage that this backend did not allocate`);
    }
    if (storage.freed) throw new Error(`${this.device}: storage was already freed (double free)`);
    storage.freed = true;
    const ctx = this.ctx;
    // Collectives on other streams may still use this memory, and an upload may still be writing
    // it: order the free after them.
    if (storage.pendingWrite !== null) awaitWrite(storage, ctx.compute);
    for (const ev of storage.pendingUses) ctx.compute.waitEvent(ev);
    storage.pendingUses = [];
    ctx.allocator.free(storage.ptr, storage.byteLength);
  }

  /**
   * Copies `data` into a new storage. An array already in `dtype`'s storage format is copied as is;
   * any other array is taken as values, uploaded in its own dtype and cast on the device (the same
   * rounding rules as the CPU backend's encoder).
   */
  fromHost(data: HostArray, dtype: DType): CudaStorage {
    const s = this.alloc(dtype, data.length);
    if (data.length === 0) return s;
    const ctx = this.ctx;
    if (isStorageArray(data, dtype)) {
      // Pinned (an offloaded slice): one DMA straight from it, beside compute ([Note: uploads on their own stream]).
      if (isPinned(data)) this.uploadPinned(data, s);
      else ctx.staging.upload(bytesOf(data), s.ptr);
      return s;
    }
    const src = valueDtypeOf(data) === null ? Float64Array.from(data) : data;
    const srcDtype = valueDtypeOf(src)!;
    const tmp = this.alloc(srcDtype, src.length);
    ctx.staging.upload(bytesOf(src), tmp.ptr);
    this.copy(contiguousViewOf(tmp, [src.length]), contiguousViewOf(s, [src.length]));
    this.free(tmp);
    return s;
  }

  /**
   * [Note: uploads on their own stream] An offloaded unit's slice goes up while the unit before it
   * computes (the prefetch is issued before that unit's kernels). Queued on the compute stream, the
   * DMA would hold every kernel behind it for its whole length; on the upload stream it overlaps
   * them, and on a stream apart from the downloads' (`hostCopies`) the two directions run on the
   * two copy engines at once instead of queueing behind each other. Two orderings make it correct:
   * - before the copy, the upload stream waits for an event recorded on compute at the call: the
   *   new storage's memory comes from the pool in compute's stream order, and may be a block that
   *   kernels still queued on compute use until they free it;
   * - after the copy, a `ready` event becomes the storage's pending write: the first use on each
   *   stream waits for it (a kernel, cuBLASLt call or copy on compute through `ptrOf`; a collective
   *   on its NCCL stream; a download on the host copy stream; the free, on compute, so the block is
   *   not handed out again while the copy writes it). Compute's wait settles it for good, since every
   *   other stream waits for compute before each use; until then each stream waits once, and only
   *   the use waits, not the issue: a collective reading the slice leaves compute free to run on.
   * The host array must keep its values until the copy has read them, as for any asynchronous copy:
   * the sharding engine writes a slice only in the optimizer step, after the step's gradients came
   * down, which compute queued after every use of the uploads.
   */
  private uploadPinned(data: HostArray, s: CudaStorage): void {
    this.writeBeside(this.ctx.uploads, s, (stream) =>
      check(cudart().cudaMemcpyAsync(s.ptr, bytesOf(data), data.byteLength, cudaMemcpyHostToDevice, stream.handle), "cudaMemcpyAsync", "cudart", "pinned host to device"),
    );
  }

  /**
   * Queues `write` (into `dst`) on `stream` after everything queued on compute so far, and makes it
   * `dst`'s pending write: the two orderings of [Note: uploads on their own stream].
   */
  private writeBeside(stream: Stream, dst: CudaStorage, write: (stream: Stream) => void): void {
    const ctx = this.ctx;
    const ordered = CudaEvent.create(false).record(ctx.compute);
    stream.waitEvent(ordered);
    ordered.destroy();
    write(stream);
    dst.pendingWrite = { ready: CudaEvent.create(false).record(stream), compute: ctx.compute, waited: [] };
  }

  /**
   * [Note: casts beside compute] dst = src (cast), queued on the `beside` stream so it runs while
   * compute goes on: a unit's autocast copies cast again while the unit after it runs its backward
   * (FSDP at world 1 frees them after forward, [Note: autocast copies reshard too] in
   * @fulgur/sharding). Casting is bound by memory bandwidth and a backward by its products, so the
   * two share the GPU well. The ordering is the upload stream's ([Note: uploads on their own
   * stream]): the side stream first waits for an event recorded on compute (dst's memory was taken
   * from the pool in compute's order, and src was last written there), and dst gets a pending
   * write that its first use on each stream waits for (compute's kernels through `ptrOf`, and its
   * free). src must not be written until then: its writer (the optimizer step) runs on compute after
   * the backward that reads dst. Views that are not contiguous, or not the same length, are copied
   * on compute as `copy` does.
   */
  copyBeside(src: View, dst: View): void {
    if (!isContiguous(src.shape, src.strides) || !isContiguous(dst.shape, dst.strides) || numelOf(src.shape) !== numelOf(dst.shape)) {
      this.copy(src, dst);
      return;
    }
    // Writes still pending on other streams are waited for by compute first (ptrOf), so the side
    // stream's wait on compute covers them too.
    ptrOf(src, this);
    ptrOf(dst, this);
    this.writeBeside(this.ctx.beside, cudaStorageOf(dst, this), (side) => ew.copy(this, src, dst, side));
  }

  read(view: View): HostArray {
    const out = allocHost(view.storage.dtype, numelOf(view.shape));
    this.readInto(view, out);
    return out;
  }

  /** Copies the view into host memory the caller owns (an offloaded gradient slice), with no array in between. */
  readInto(view: View, out: HostArray): void {
    cudaStorageOf(view, this);
    const dtype = view.storage.dtype;
    const n = numelOf(view.shape);
    if (out.length !== n) throw new RangeError(`readInto: ${n} elements into a host array of ${out.length}`);
    const ctx = this.ctx;
    if (isContiguous(view.shape, view.strides)) {
      if (isPinned(out)) {
        this.queueDownload(ptrOf(view, this), out, ctx.compute.handle);
        ctx.status.queueRead();
        ctx.compute.synchronize();
      } else ctx.staging.download(ptrOf(view, this), bytesOf(out), () => ctx.status.queueRead());
    } else {
      const tmp = this.alloc(dtype, n);
      this.copy(view, contiguousViewOf(tmp, view.shape));
      try {
        ctx.staging.download(tmp.ptr, bytesOf(out), () => ctx.status.queueRead());
      } finally {
        this.free(tmp);
      }
    }
    ctx.status.raiseIfSet();
  }

  private queueDownload(src: bigint, out: HostArray, stream: bigint): void {
    check(cudart().cudaMemcpyAsync(bytesOf(out), src, out.byteLength, cudaMemcpyDeviceToHost, stream), "cudaMemcpyAsync", "cudart", "device to pinned host");
  }

  pinHost(array: HostArray): void {
    pinHost(array);
  }

  unpinHost(array: HostArray): void {
    // An upload may still be reading the pages: unregistering them under a DMA is undefined.
    this.ctxValue?.finishUploads();
    unpinHost(array);
  }

  /**
   * Into pinned memory: the copy runs on the host copy stream after the compute work queued so
   * far, beside what compute does next; the view's memory is not reused before it has been read
   * (its storage's pending uses). Elsewhere it is `readInto`, done before this returns.
   */
  readIntoAsync(view: View, out: HostArray): PendingRead {
    const storage = cudaStorageOf(view, this);
    const n = numelOf(view.shape);
    if (out.length !== n) throw new RangeError(`readIntoAsync: ${n} elements into a host array of ${out.length}`);
    if (!isPinned(out) || !isContiguous(view.shape, view.strides)) {
      this.readInto(view, out);
      return { poll: () => true, wait: () => {} };
    }
    const ctx = this.ctx;
    const copies = ctx.hostCopies;
    const ready = CudaEvent.create(false).record(ctx.compute);
    copies.waitEvent(ready);
    awaitWrite(storage, copies);
    this.queueDownload(addressOf(view, this), out, copies.handle);
    const done = CudaEvent.create(false).record(copies);
    storage.pendingUses.push(done);
    let waited = false;
    return {
      poll: () => waited || done.query(),
      wait: () => {
        if (waited) return;
        waited = true;
        done.synchronize();
        storage.pendingUses = storage.pendingUses.filter((e) => e !== done);
        ready.destroy();
        done.destroy();
      },
    };
  }

  memoryStats(): BackendMemoryStats {
    return this.ctx.allocator.memoryStats();
  }

  resetPeak(): void {
    this.ctx.allocator.resetPeak();
  }

  synchronize(): void {
    this.ctx.synchronize();
  }

  /** Readable report of this device's memory (allocated, peak, pool, device free/total). */
  memorySummary(): string {
    return this.ctx.allocator.memorySummary();
  }

  /** Returns cached pool memory to the driver (other processes can then use it). */
  emptyCache(): void {
    this.ctx.allocator.emptyCache();
  }

  // ---- ops ---------------------------------------------------------------------------------

  copy(src: View, dst: View): void {
    ew.copy(this, src, dst);
  }

  fill(dst: View, value: number): void {
    ew.fill(this, dst, value);
  }

  unary(op: UnaryOp, x: View, out: View, scalar?: number): void {
    ew.unary(this, op, x, out, scalar);
  }

  binary(op: BinaryOp, a: View, b: View, out: View): void {
    ew.binary(this, op, a, b, out);
  }

  addMany(dsts: readonly View[], srcs: readonly View[]): void {
    addMany(this, dsts, srcs);
  }

  where(cond: View, a: View, b: View, out: View): void {
    ew.where(this, cond, a, b, out);
  }

  reduce(op: ReduceOp, x: View, out: View): void {
    reduce(this, op, x, out);
  }

  matmul(a: View, b: View, out: View, options?: MatmulOptions): void {
    matmul(this, a, b, out, options);
  }

  softmax(x: View, out: View, log: boolean): void {
    nn.softmax(this, x, out, log);
  }

  softmaxBackward(y: View, gy: View, gx: View, log: boolean): void {
    nn.softmaxBackward(this, y, gy, gx, log);
  }

  layerNorm(x: View, weight: View | null, bias: View | null, eps: number, out: View, mean: View, rstd: View): void {
    nn.layerNorm(this, x, weight, bias, eps, out, mean, rstd);
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
    nn.layerNormBackward(this, gy, x, weight, mean, rstd, gx, gw, gb, accumulateGx);
  }

  embedding(weight: View, ids: View, out: View): void {
    nn.embedding(this, weight, ids, out);
  }

  embeddingBackward(gy: View, ids: View, gw: View): void {
    nn.embeddingBackward(this, gy, ids, gw);
  }

  crossEntropy(logits: View, targets: View, ignoreIndex: number, loss: View, lse: View): void {
    nn.crossEntropy(this, logits, targets, ignoreIndex, loss, lse);
  }

  crossEntropyBackward(logits: View, targets: View, lse: View, gloss: View, ignoreIndex: number, glogits: View): void {
    nn.crossEntropyBackward(this, logits, targets, lse, gloss, ignoreIndex, glogits);
  }

  attention(q: View, k: View, v: View, out: View, lse: View, causal: boolean, scale: number): void {
    attention(this, q, k, v, out, lse, causal, scale);
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
    attentionBackward(this, q, k, v, out, lse, gout, gq, gk, gv, causal, scale);
  }

  random(kind: "uniform" | "normal", out: View, state: PhiloxState): void {
    random(this, kind, out, state);
  }

  adamw(params: View[], grads: View[], expAvg: View[], expAvgSq: View[], hyper: AdamWHyper, lowPrecision?: readonly (View | null)[]): void {
    adamw(this, params, grads, expAvg, expAvgSq, hyper, lowPrecision);
  }

  /** out[0] = the L2 norm of all `views` together (gradient clipping), computed deterministically. */
  globalNorm(views: readonly View[], out: View): void {
    globalNorm(this, views, out);
  }
}

const backends = new Map<number, CudaBackend>();

/** The backend of one device (one instance per device index per process). */
export function cudaBackend(device = "cuda:0"): CudaBackend {
  const index = parseDevice(device);
  let b = backends.get(index);
  if (!b) {
    b = new CudaBackend(`cuda:${index}`);
    backends.set(index, b);
  }
  return b;
}

let registered = false;

/** Registers the "cuda" backend prefix with the tensor engine (idempotent; no GPU is touched). */
export function registerCudaBackend(): void {
  if (registered) return;
  registerBackend("cuda", (device: string) => cudaBackend(device));
  registered = true;
}
