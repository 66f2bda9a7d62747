/**
 * The disk offload's I/O threads: worker threads that run positional reads and writes of tensors'
 * shared memory (SharedArrayBuffers) while the main thread computes. Requests are at most
 * `bufferSize` bytes (DeepSpeed's `buffer_size`) and at most `bufferCount` are in flight
 * (`buffer_count`): submitting one more first waits for the oldest. The main thread waits for a
 * request on its control word (`Atomics.wait`), so the optimizer step that uses them stays
 * synchronous, as the CPU optimizer's threads keep it (@fulgur/tensor's optimizerThreads.ts).
 *
 * Node has no O_DIRECT and no io_uring/libaio binding: these are plain positional reads and writes
 * through the page cache (fs.readSync/writeSync on a worker thread), in requests of `bufferSize`
 * bytes at file offsets aligned to the block size.
 */
import type { Worker } from "node:worker_threads";
import { startReadyWorker } from "@fulgur/tensor";
import { CONTROL_BYTES, DONE, FAILED, type IoRequest, PENDING } from "./ioRequest";

export interface IoThreadSettings {
  /** Worker threads (aio.thread_count). */
  readonly threads: number;
  /** Requests in flight at most (buffer_count). */
  readonly bufferCount: number;
  /** Bytes per request at most (buffer_size). */
  readonly bufferSize: number;
}

/** A submitted request, waited for by `IoThreads.wait`. */
export interface Pending {
  readonly request: IoRequest;
}

/** A worker that stopped (killed, out of memory) must not hang the step for ever. */
const REQUEST_TIMEOUT_MS = 600_000;

const spawn = (): Worker => startReadyWorker(import.meta.url, { source: "./ioWorker.ts", built: "./nvmeIoWorker.js" }, "NVMe offload: an I/O worker thread");

export class IoThreads {
  private workers: Worker[] = [];
  private next = 0;
  /** Submitted and not yet waited for, oldest first: what buffer_count bounds. */
  private readonly inFlight: Pending[] = [];

  constructor(readonly settings: IoThreadSettings) {}

  /**
   * Submits a read of the file into `bytes` (or a write of `bytes` to it) at `position`, split into
   * requests of at most bufferSize bytes. `bytes` must be over a SharedArrayBuffer.
   */
  submit(op: "read" | "write", fd: number, bytes: Uint8Array, position: number): Pending[] {
    if (!(bytes.buffer instanceof SharedArrayBuffer)) throw new TypeError("NVMe offload: the I/O threads need tensors in shared memory (sharedHostMemory)");
    if (this.workers.length === 0) this.workers = Array.from({ length: this.settings.threads }, spawn);
    const out: Pending[] = [];
    for (let start = 0; start < bytes.length; start += this.settings.bufferSize) {
      while (this.inFlight.length >= this.settings.bufferCount) this.wait([this.inFlight[0]]);
      const request: IoRequest = {
        op,
        fd,
        buffer: bytes.buffer,
        byteOffset: bytes.byteOffset + start,
        length: Math.min(this.settings.bufferSize, bytes.length - start),
        position: position + start,
        control: new SharedArrayBuffer(CONTROL_BYTES),
      };
      this.workers[this.next++ % this.workers.length].postMessage(request);
      const pending = { request };
      this.inFlight.push(pending);
      out.push(pending);
    }
    return out;
  }

  /** Waits until every request is done; throws the first failure, naming the operation and the file offset. */
  wait(pending: readonly Pending[]): void {
    let failure: Error | null = null;
    for (const p of pending) {
      const at = this.inFlight.indexOf(p);
      if (at < 0) continue;
      this.inFlight.splice(at, 1);
      const control = new Int32Array(p.request.control, 0, 1);
      const deadline = Date.now() + REQUEST_TIMEOUT_MS;
      while (Atomics.load(control, 0) === PENDING) {
        if (Date.now() > deadline) throw new Error(`NVMe offload: a ${p.request.op} of ${p.request.length} bytes at offset ${p.request.position} did not finish within ${REQUEST_TIMEOUT_MS / 1000} s`);
        Atomics.wait(control, 0, PENDING, 1000);
      }
      const state = Atomics.load(control, 0);
      if (state === FAILED && !failure) {
        const text = new TextDecoder().decode(new Uint8Array(p.request.control, 4).slice()).replace(/\0+$/, "");
        failure = new Error(`NVMe offload: a ${p.request.op} of ${p.request.length} bytes at offset ${p.request.position} failed: ${text}`);
      } else if (state !== DONE && state !== FAILED) failure ??= new Error(`NVMe offload: unknown request state ${state}`);
    }
    if (failure) throw failure;
  }

  /** Waits for everything in flight, then stops the threads (started again if needed). */
  stop(): void {
    try {
      this.wait(this.inFlight.slice());
    } finally {
      for (const w of this.workers.splice(0)) void w.terminate();
    }
  }
}
