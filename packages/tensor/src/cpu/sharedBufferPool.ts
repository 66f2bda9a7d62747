/**
 * [Note: reusing shared memory] A SharedArrayBuffer's memory goes back to the OS only when every
 * isolate that saw it has collected its handle: the main thread's, and those of the worker threads
 * it was posted to (the CPU optimizer's, the disk offload's I/O threads). A worker allocates little
 * and so collects rarely, and large storages freed and made again at a high rate (the disk
 * offload's pieces, read in and released every step, or made by the first step's optimizer and
 * written out) pile up as garbage: on a 16.8B-parameter run it was tens of GB, enough to end the
 * process. So the CPU backend keeps large freed shared buffers here and hands them to the next
 * allocation of the same byte length: bounded per length and in all, the rest left to the GC.
 */
import { totalmem } from "node:os";

/** Shared buffers from this size up are kept when freed. */
export const POOL_MIN_BYTES = 16 * 2 ** 20;
/** Buffers of one byte length kept at most (two pieces of a step's optimizer state, each with two moments). */
export const POOL_PER_LENGTH = 8;

export class SharedBufferPool {
  private readonly free = new Map<number, SharedArrayBuffer[]>();
  private held = 0;

  constructor(
    /** Bytes kept in all at most. */
    readonly limit = Math.min(16 * 2 ** 30, Math.floor(totalmem() / 8)),
  ) {}

  /** Bytes held now. */
  get bytes(): number {
    return this.held;
  }

  /** A kept buffer of exactly `bytes`, or null (its contents are whatever its last owner left). */
  take(bytes: number): SharedArrayBuffer | null {
    const list = this.free.get(bytes);
    const buffer = list?.pop() ?? null;
    if (buffer) this.held -= bytes;
    return buffer;
  }

  /** Keeps a freed buffer for reuse when there is room; true when kept. */
  give(buffer: SharedArrayBuffer): boolean {
    const bytes = buffer.byteLength;
    if (bytes < POOL_MIN_BYTES || this.held + bytes > this.limit) return false;
    let list = this.free.get(bytes);
    if (!list) this.free.set(bytes, (list = []));
    if (list.length >= POOL_PER_LENGTH) return false;
    list.push(buffer);
    this.held += bytes;
    return true;
  }
}
