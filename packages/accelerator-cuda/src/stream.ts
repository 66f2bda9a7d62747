/**
 * CUDA streams. Fulgur keeps few, each with one job, so the order of work is easy to reason about:
 * - the compute stream (one per device, src/context.ts): every tensor op, allocation and free, and
 *   the staged host<->device copies of fromHost/read, in program order; stream-ordered allocation makes a
 *   freed block reusable by the next op without any host synchronisation;
 * - the communication stream (one per NCCL process group, src/nccl.ts): collectives, so they overlap
 *   with compute; ordered against the compute stream with events, never with host waits;
 * - the host copy stream and the upload stream (one each per device, src/context.ts): downloads into
 *   and uploads from pinned host memory (offload), beside compute and beside each other, ordered
 *   with events too ([Note: uploads on their own stream] in src/cudaBackend.ts).
 * Streams are non-blocking: they do not synchronise with the legacy default stream, which some
 * libraries still use implicitly.
 */
import { check } from "./check";
import type { Ptr } from "./ffi/cudart";
import { cudaStreamNonBlocking, cudart } from "./ffi/cudart";
import type { CudaEvent } from "./event";

export class Stream {
  private destroyed = false;

  private constructor(
    readonly handle: Ptr,
    readonly device: number,
    /** Why this stream exists, shown in errors. */
    readonly purpose: string,
  ) {}

  /** Creates a non-blocking stream on the current device. */
  static create(device: number, purpose: string): Stream {
    const out: [Ptr | null] = [null];
    check(cudart().cudaStreamCreateWithFlags(out, cudaStreamNonBlocking), "cudaStreamCreateWithFlags", "cudart", purpose);
    if (out[0] === null) throw new Error(`cudaStreamCreateWithFlags returned no stream (${purpose})`);
    return new Stream(out[0], device, purpose);
  }

  /** Blocks the host until all work queued on this stream has finished. */
  synchronize(): void {
    this.assertLive();
    check(cudart().cudaStreamSynchronize(this.handle), "cudaStreamSynchronize", "cudart", this.purpose);
  }

  /** Makes later work on this stream wait (on the device, not the host) for `event`. */
  waitEvent(event: CudaEvent): void {
    this.assertLive();
    check(cudart().cudaStreamWaitEvent(this.handle, event.handle, 0), "cudaStreamWaitEvent", "cudart", this.purpose);
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    check(cudart().cudaStreamDestroy(this.handle), "cudaStreamDestroy", "cudart", this.purpose);
  }

  private assertLive(): void {
    if (this.destroyed) throw new Error(`stream "${this.purpose}" on cuda:${this.device} was destroyed`);
  }
}
