/**
 * Page-locked ("pinned") host memory and the staging ring that moves tensors between host and
 * device. Copies from pinned memory run as true asynchronous DMA; copies from ordinary JavaScript
 * memory would make the driver stage through its own bounce buffer, synchronously. So fromHost
 * copies the typed array into a pinned slot and queues an asynchronous upload; read() queues
 * downloads into pinned slots, waits once, and copies out.
 *
 * The ring has a few fixed-size slots, each with an event recorded after the copy that uses it:
 * a slot is refilled only once its previous copy has finished, so uploads queue up to the ring's
 * size without any host wait and large transfers stream through in slot-sized pieces.
 */
import koffi from "koffi";
import { check } from "./check";
import type { Ptr } from "./ffi/cudart";
import { cudaHostAllocDefault, cudaMemcpyDeviceToHost, cudaMemcpyHostToDevice, cudart } from "./ffi/cudart";
import { CudaEvent } from "./event";
import type { Stream } from "./stream";

/** One cudaHostAlloc block with a JavaScript view of its bytes. */
export class PinnedBuffer {
  readonly bytes: Uint8Array;
  private freed = false;

  private constructor(
    readonly ptr: Ptr,
    readonly size: number,
  ) {
    this.bytes = new Uint8Array(koffi.view(ptr, size));
  }

  static alloc(size: number): PinnedBuffer {
    if (!Number.isInteger(size) || size <= 0) throw new RangeError(`pinned buffer size: got ${size}; expected a positive integer`);
    const out: [Ptr | null] = [null];
    check(cudart().cudaHostAlloc(out, size, cudaHostAllocDefault), "cudaHostAlloc", "cudart", `${size} bytes of pinned memory`);
    if (out[0] === null) throw new Error("cudaHostAlloc returned no memory");
    return new PinnedBuffer(out[0], size);
  }

  free(): void {
    if (this.freed) return;
    this.freed = true;
    check(cudart().cudaFreeHost(this.ptr), "cudaFreeHost");
  }
}

interface Slot {
  readonly buf: PinnedBuffer;
  readonly done: CudaEvent;
}

export class PinnedStaging {
  private readonly slots: Slot[] = [];
  private next = 0;

  constructor(
    private readonly stream: Stream,
    readonly slotBytes = 8 << 20,
    readonly slotCount = 4,
  ) {}

  private slot(): Slot {
    if (this.slots.length < this.slotCount) {
      const s = { buf: PinnedBuffer.alloc(this.slotBytes), done: CudaEvent.create(false) };
      this.slots.push(s);
      return s;
    }
    const s = this.slots[this.next];
    this.next = (this.next + 1) % this.slotCount;
    // Its previous copy must have read (or written) the slot before we touch it again.
    if (s.done.wasRecorded) s.done.synchronize();
    return s;
  }

  /** Queues a copy of `src` to device address `dst` on the stream; returns without waiting for it. */
  upload(src: Uint8Array, dst: Ptr): void {
    for (let off = 0; off < src.length; off += this.slotBytes) {
      const n = Math.min(this.slotBytes, src.length - off);
      const s = this.slot();
      s.buf.bytes.set(src.subarray(off, off + n));
      check(
        cudart().cudaMemcpyAsync(dst + BigInt(off), s.buf.ptr, n, cudaMemcpyHostToDevice, this.stream.handle),
        "cudaMemcpyAsync",
        "cudart",
        "host to device",
      );
      s.done.record(this.stream);
    }
  }

  /**
   * Copies `dst.length` bytes from device address `src` into `dst`, waiting for the stream (and so
   * for every op queued before). `beforeWait` runs after the copies are queued and before the wait,
   * so a caller can queue more small copies (the device error flag) into the same synchronisation.
   */
  download(src: Ptr, dst: Uint8Array, beforeWait?: () => void): void {
    let off = 0;
    let first = true;
    while (first || off < dst.length) {
      const batch: { s: Slot; off: number; n: number }[] = [];
      for (let k = 0; k < this.slotCount && off < dst.length; k++) {
        const n = Math.min(this.slotBytes, dst.length - off);
        const s = this.slot();
        check(
          cudart().cudaMemcpyAsync(s.buf.ptr, src + BigInt(off), n, cudaMemcpyDeviceToHost, this.stream.handle),
          "cudaMemcpyAsync",
          "cudart",
          "device to host",
        );
        s.done.record(this.stream);
        batch.push({ s, off, n });
        off += n;
      }
      if (first) beforeWait?.();
      first = false;
      this.stream.synchronize();
      for (const b of batch) dst.set(b.s.buf.bytes.subarray(0, b.n), b.off);
    }
  }

  dispose(): void {
    for (const s of this.slots) {
      if (s.done.wasRecorded) s.done.synchronize();
      s.done.destroy();
      s.buf.free();
    }
    this.slots.length = 0;
  }
}
