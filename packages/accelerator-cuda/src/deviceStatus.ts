/**
 * The device error flag. A kernel that meets bad data, an embedding id or a cross-entropy target
 * out of range, cannot throw: it records the first failure (code, value, row, limit) in a small
 * device buffer (kernels/common.cuh, report_status). The host reads the flag together with the data
 * at every synchronisation (read(), synchronize()) and raises the error there with those numbers,
 * the same message the CPU backend throws up front. The flag is then cleared.
 */
import { check } from "./check";
import type { Ptr } from "./ffi/cudart";
import { cudaMemcpyDeviceToHost, cudart } from "./ffi/cudart";
import type { DeviceAllocator } from "./allocator";
import { PinnedBuffer } from "./pinned";
import type { Stream } from "./stream";

// Must match STATUS_* in kernels/common.cuh.
export const STATUS_EMBEDDING_ID = 1;
export const STATUS_CE_TARGET = 2;

const STATUS_BYTES = 16;

/** The error a status record stands for, or null for code 0. Exported for tests. */
export function statusToError(code: number, value: number, row: number, limit: number): Error | null {
  switch (code) {
    case 0:
      return null;
    case STATUS_EMBEDDING_ID:
      return new RangeError(`embedding: index ${value} at row ${row} is out of range for an embedding of ${limit} rows`);
    case STATUS_CE_TARGET:
      return new RangeError(`crossEntropy: target ${value} at row ${row} is out of range for ${limit} classes`);
    default:
      return new Error(`a CUDA kernel reported unknown status ${code} (value ${value}, row ${row}, limit ${limit})`);
  }
}

export class DeviceStatus {
  readonly ptr: Ptr;
  private readonly host: PinnedBuffer;

  constructor(
    allocator: DeviceAllocator,
    private readonly stream: Stream,
  ) {
    this.ptr = allocator.alloc(STATUS_BYTES);
    check(cudart().cudaMemsetAsync(this.ptr, 0, STATUS_BYTES, stream.handle), "cudaMemsetAsync", "cudart", "device error flag");
    this.host = PinnedBuffer.alloc(STATUS_BYTES);
  }

  /** Queues the copy of the flag to the host; call before the stream synchronisation. */
  queueRead(): void {
    check(
      cudart().cudaMemcpyAsync(this.host.ptr, this.ptr, STATUS_BYTES, cudaMemcpyDeviceToHost, this.stream.handle),
      "cudaMemcpyAsync",
      "cudart",
      "device error flag",
    );
  }

  /** After the synchronisation: throws the recorded error (and clears the flag) if one was set. */
  raiseIfSet(): void {
    const v = new Int32Array(this.host.bytes.buffer, this.host.bytes.byteOffset, 4);
    const err = statusToError(v[0], v[1], v[2], v[3]);
    if (err === null) return;
    v.fill(0);
    check(cudart().cudaMemsetAsync(this.ptr, 0, STATUS_BYTES, this.stream.handle), "cudaMemsetAsync", "cudart", "device error flag");
    throw err;
  }
}
