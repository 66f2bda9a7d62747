/**
 * One positional read or write that an I/O thread of the disk offload runs (see ioThreads.ts):
 * bytes of a SharedArrayBuffer (a tensor's own memory) to or from a place in a file. The thread
 * says it is done, or why it failed, in the request's control words.
 */
import { readSync, writeSync } from "node:fs";

export interface IoRequest {
  readonly op: "read" | "write";
  readonly fd: number;
  readonly buffer: SharedArrayBuffer;
  readonly byteOffset: number;
  readonly length: number;
  /** Where in the file (a multiple of the block size). */
  readonly position: number;
  /** Int32 [state: 0 pending, 1 done, 2 failed] then up to 1 KiB of UTF-8 error text. */
  readonly control: SharedArrayBuffer;
}

export const PENDING = 0;
export const DONE = 1;
export const FAILED = 2;
export const CONTROL_BYTES = 4 + 1024;

/** Runs a request to the end (a read or write may move fewer bytes than asked) and reports in its control words. */
export function runRequest(r: IoRequest): void {
  const control = new Int32Array(r.control, 0, 1);
  try {
    const bytes = new Uint8Array(r.buffer, r.byteOffset, r.length);
    let done = 0;
    while (done < r.length) {
      const n = r.op === "read" ? readSync(r.fd, bytes, done, r.length - done, r.position + done) : writeSync(r.fd, bytes, done, r.length - done, r.position + done);
      if (n === 0) throw new Error(`the file ended ${done} bytes into a ${r.op} of ${r.length} bytes at offset ${r.position}`);
      done += n;
    }
    Atomics.store(control, 0, DONE);
  } catch (e) {
    const text = new TextEncoder().encode(String((e as Error)?.message ?? e).slice(0, 1000));
    new Uint8Array(r.control, 4, CONTROL_BYTES - 4).set(text.subarray(0, CONTROL_BYTES - 4));
    Atomics.store(control, 0, FAILED);
  }
  Atomics.notify(control, 0);
}
