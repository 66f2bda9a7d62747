/**
 * CUDA storage: a device pointer, its dtype and length. The memory comes from the device's
 * stream-ordered pool (allocator.ts) and goes back to it when the tensor engine frees the storage,
 * deterministically, never through the garbage collector (DESIGN.md, decision 2).
 */
import type { Backend, DType, Storage, View } from "@fulgur/tensor";
import type { Ptr } from "./ffi/cudart";
import type { CudaEvent } from "./event";
import type { Stream } from "./stream";
import { itemsizeOf } from "./ops/dtypes";

/**
 * A copy into the storage still running on another stream (an upload from pinned host memory on
 * the upload stream). See [Note: uploads on their own stream] in cudaBackend.ts.
 */
export interface PendingWrite {
  /** Recorded on the writing stream right after the copy. */
  readonly ready: CudaEvent;
  /** The compute stream of the storage's device: once it has waited, the write is settled for every stream. */
  readonly compute: Stream;
  /** Other streams (NCCL, host copies) that waited already, so each waits once. */
  readonly waited: Stream[];
}

export class CudaStorage implements Storage {
  readonly byteLength: number;
  /** Set by CudaBackend.free; every op refuses freed storages. */
  freed = false;
  /**
   * Events marking work on other streams (collectives) that still reads or writes this memory.
   * free() makes the compute stream wait for them before the block can be reused.
   */
  pendingUses: CudaEvent[] = [];
  /** A write on another stream that the first use on each stream must wait for (`awaitWrite`), or null. */
  pendingWrite: PendingWrite | null = null;

  constructor(
    readonly backend: Backend,
    readonly dtype: DType,
    readonly length: number,
    readonly ptr: Ptr,
  ) {
    this.byteLength = length * itemsizeOf(dtype);
  }
}

/** The storage of a view after checking it is CUDA memory of `backend` and still live. */
export function cudaStorageOf(view: View, backend: Backend): CudaStorage {
  const s = view.storage;
  if (!(s instanceof CudaStorage)) {
    throw new TypeError(`${backend.device}: got a tensor on "${s.backend.device}"; move it to ${backend.device} first`);
  }
  if (s.backend !== backend) {
    throw new TypeError(`${backend.device}: got a tensor on ${s.backend.device}; move it to ${backend.device} first`);
  }
  if (s.freed) throw new Error(`${backend.device}: use of a storage after it was freed`);
  return s;
}

/**
 * Orders `stream` (default: the compute stream) after the storage's pending write, once per stream.
 * The compute stream's wait settles the write: every other stream orders itself after compute
 * before each use, so nothing needs the event after that.
 */
export function awaitWrite(s: CudaStorage, stream?: Stream): void {
  const w = s.pendingWrite;
  if (w === null) return;
  const on = stream ?? w.compute;
  if (on === w.compute) {
    on.waitEvent(w.ready);
    s.pendingWrite = null;
    // Destroying an event a stream waits on is allowed: the wait holds what the event was at the call.
    w.ready.destroy();
  } else if (!w.waited.includes(on)) {
    on.waitEvent(w.ready);
    w.waited.push(on);
  }
}

/** Device address of a view's first element, with no ordering: for callers that order their own stream (`awaitWrite`). */
export function addressOf(view: View, backend: Backend): Ptr {
  const s = cudaStorageOf(view, backend);
  return s.ptr + BigInt(view.offset * itemsizeOf(s.dtype));
}

/**
 * Device address of a view's first element, for work queued on the compute stream (every kernel,
 * cuBLASLt call and copy takes its operands' addresses here): the compute stream first waits for
 * a write still pending on another stream.
 */
export function ptrOf(view: View, backend: Backend): Ptr {
  const s = cudaStorageOf(view, backend);
  if (s.pendingWrite !== null) awaitWrite(s);
  return s.ptr + BigInt(view.offset * itemsizeOf(s.dtype));
}
