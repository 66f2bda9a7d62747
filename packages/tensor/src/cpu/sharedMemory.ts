/**
 * Which CPU storages live in SharedArrayBuffers, the memory worker threads can read and write in
 * place: the CPU optimizer's threads (optimizerThreads.ts) and the disk offload's I/O threads
 * (@fulgur/sharding). Large storages always do; inside `sharedHostMemory` every storage does, so
 * the slices, gradients and optimizer state an offloading engine keeps on the host are shared
 * whatever their size (a small model's too, which is how CPU tests reach the threaded paths).
 */
import { itemsize } from "../dtype";
import type { Tensor } from "../tensor";
import { restoreAfter } from "../restoreAfter";
import { dataOf } from "./storage";

/** Storages from this size up are SharedArrayBuffers wherever they are made. */
export const SHARED_MIN_BYTES = 1 << 20;

let depth = 0;

/** Whether a CPU storage of `bytes` is allocated in shared memory here. */
export function allocatesShared(bytes: number): boolean {
  return depth > 0 || bytes >= SHARED_MIN_BYTES;
}

/**
 * Runs `fn` with every CPU storage it allocates in shared memory. A promise returned by `fn` keeps
 * the setting until it settles (an async optimizer step that awaits collectives between its parts).
 */
export function sharedHostMemory<T>(fn: () => T): T {
  depth++;
  return restoreAfter(fn, () => {
    depth--;
  });
}

/**
 * The bytes of a contiguous CPU tensor: its storage's own memory, not a copy (what the disk
 * offload's I/O threads write to a file and read back into).
 */
export function hostBytesOf(t: Tensor): Uint8Array {
  if (t.device !== "cpu") throw new TypeError(`hostBytesOf: the tensor is on ${t.device}; expected a tensor on the cpu`);
  if (!t.isContiguous()) throw new TypeError("hostBytesOf: expected a contiguous tensor");
  const data = dataOf({ storage: t.storageRef.storage, shape: t.shape, strides: t.strides, offset: t.offset });
  const size = itemsize(t.dtype);
  return new Uint8Array(data.buffer, data.byteOffset + t.offset * size, t.numel * size);
}
