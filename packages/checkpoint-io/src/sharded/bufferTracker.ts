/**
 * Counts the data buffers the sharded reader and the converters allocate, and the tensor bytes
 * they read. Converting or resharding a checkpoint must run in memory bounded by about its largest
 * tensor, whatever the checkpoint's total size; peak RSS is too noisy to hold that to in a test
 * (the garbage collector decides when freed buffers go), so the code reports its own buffers and
 * tests assert on `largest` and `peakHeld`. `bytesRead` shows that a range read touched only the
 * bytes of that range.
 */
export class BufferTracker {
  /** The largest single buffer allocated. */
  largest = 0;
  /** Bytes allocated and not yet released. */
  held = 0;
  /** The most bytes held at once. */
  peakHeld = 0;
  /** Tensor bytes read from files (headers not counted). */
  bytesRead = 0;

  allocate(bytes: number): Uint8Array {
    const buffer = new Uint8Array(bytes);
    this.largest = Math.max(this.largest, bytes);
    this.held += bytes;
    this.peakHeld = Math.max(this.peakHeld, this.held);
    return buffer;
  }

  /** The buffer is no longer used by the code that allocated it (the caller may still keep it). */
  release(buffer: Uint8Array): void {
    this.held -= buffer.byteLength;
  }

  countRead(bytes: number): void {
    this.bytesRead += bytes;
  }
}
