/**
 * Host arrays page-locked in place (cudaHostRegister) for the length of a run: the offloaded
 * slices and gradient slices of the sharding engine. A copy to or from them is one DMA queued on
 * a stream, with no bounce through the staging ring (pinned.ts) and so no host wait for a free
 * slot and no host-side memcpy. The arrays live in SharedArrayBuffers (the CPU optimizer's threads
 * update them in place), whose memory never moves, so the address the driver saw stays valid.
 *
 * Registration is of whole buffers, counted, and process-wide (portable: every device's context
 * sees the pages as pinned).
 */
import { check } from "./check";
import { cudaHostRegisterPortable, cudart } from "./ffi/cudart";

const counts = new Map<ArrayBufferLike, number>();

/** Page-locks the buffer under `array` (once per buffer; each call needs one `unpinHost`). */
export function pinHost(array: ArrayBufferView): void {
  const buffer = array.buffer;
  if (buffer.byteLength === 0) return;
  const n = counts.get(buffer) ?? 0;
  if (n === 0) {
    check(
      cudart().cudaHostRegister(new Uint8Array(buffer), buffer.byteLength, cudaHostRegisterPortable),
      "cudaHostRegister",
      "cudart",
      `${buffer.byteLength} bytes of host memory`,
    );
  }
  counts.set(buffer, n + 1);
}

export function unpinHost(array: ArrayBufferView): void {
  const buffer = array.buffer;
  const n = counts.get(buffer);
  if (n === undefined) return;
  if (n > 1) {
    counts.set(buffer, n - 1);
    return;
  }
  counts.delete(buffer);
  check(cudart().cudaHostUnregister(new Uint8Array(buffer)), "cudaHostUnregister");
}

/** True when `array` lies in page-locked memory: a copy can read or write it directly. */
export function isPinned(array: ArrayBufferView): boolean {
  return counts.has(array.buffer);
}

/** How many buffers are registered now (tests check that teardown unpins what it pinned). */
export function pinnedBufferCount(): number {
  return counts.size;
}
