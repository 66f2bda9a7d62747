/**
 * CUDA storage: a device pointer, its dtype and length. The memory comes from the device's
 * stream-ordered pool (allocator.ts) and goes back to it when the tensor engine frees the storage,
 * deterministically, never through the garbage collector (DESIGN.md, decision 2).
 */
import type { Backend, DType, Storage, View } from "@fulgur/tensor";
import type { Ptr } from "./ffi/cudart";
import type { CudaEvent } from "./event";
import { itemsizeOf } from "./ops/dtypes";

export class CudaStorage implements Storage {
  readonly byteLength: number;
  /** Set by CudaBackend.free; every op refuses freed storages. */
  freed = false;
  /**
   * Events marking work on other streams (collectives) that still reads or writes this memory.
   * free() makes the compute stream wait for them before the block can be reused.
   */
  pendingUses: CudaEvent[] = [];

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

/** Device address of a view's first element. */
export function ptrOf(view: View, backend: Backend): Ptr {
  const s = cudaStorageOf(view, backend);
  return s.ptr + BigInt(view.offset * itemsizeOf(s.dtype));
}
