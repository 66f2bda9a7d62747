/**
 * CUDA events: markers recorded on a stream. Fulgur uses them to order one stream after another on
 * the device (NCCL after compute and back), to know when a host staging buffer may be reused, to
 * back `Work` handles, and to time kernels. `wait()` polls instead of blocking so a pending
 * collective never freezes the event loop (and with it the watchdog that would abort it).
 */
import { check, statusError } from "./check";
import type { Ptr } from "./ffi/cudart";
import { cudaErrorNotReady, cudaEventDefault, cudaEventDisableTiming, cudart } from "./ffi/cudart";
import type { Stream } from "./stream";

export interface PollOptions {
  /** First poll delay in ms; doubles up to maxDelayMs. 0 starts with setImmediate. */
  readonly initialDelayMs?: number;
  readonly maxDelayMs?: number;
  /** Rejects when it passes (the event itself is left alone). */
  readonly signal?: AbortSignal;
}

export class CudaEvent {
  private destroyed = false;
  /** Whether record() has been called: querying a never-recorded event reports it complete. */
  private recorded = false;

  private constructor(
    readonly handle: Ptr,
    readonly timing: boolean,
  ) {}

  /** timing=false events are cheaper to record and wait on; only timing events give elapsed times. */
  static create(timing = false): CudaEvent {
    const out: [Ptr | null] = [null];
    const flags = timing ? cudaEventDefault : cudaEventDisableTiming;
    check(cudart().cudaEventCreateWithFlags(out, flags), "cudaEventCreateWithFlags");
    if (out[0] === null) throw new Error("cudaEventCreateWithFlags returned no event");
    return new CudaEvent(out[0], timing);
  }

  record(stream: Stream): this {
    this.assertLive();
    check(cudart().cudaEventRecord(this.handle, stream.handle), "cudaEventRecord", "cudart", stream.purpose);
    this.recorded = true;
    return this;
  }

  get wasRecorded(): boolean {
    return this.recorded;
  }

  /** True when all work before the record has finished; throws if that work failed. */
  query(): boolean {
    this.assertLive();
    const code = cudart().cudaEventQuery(this.handle);
    if (code === cudaErrorNotReady) return false;
    check(code, "cudaEventQuery");
    return true;
  }

  /** Blocks the host until the event has completed. */
  synchronize(): void {
    this.assertLive();
    check(cudart().cudaEventSynchronize(this.handle), "cudaEventSynchronize");
  }

  /**
   * Resolves when the event completes. The first polls yield with setImmediate (short collectives
   * finish within microseconds), then the delay doubles from 1 ms up to maxDelayMs, so a long wait
   * costs little CPU and the event loop keeps running throughout.
   */
  async wait(options: PollOptions = {}): Promise<void> {
    const maxDelay = options.maxDelayMs ?? 4;
    let delay = options.initialDelayMs ?? 0;
    for (let polls = 0; ; polls++) {
      if (options.signal?.aborted) throw options.signal.reason ?? new Error("wait aborted");
      if (this.query()) return;
      if (delay === 0 && polls < 64) {
        await new Promise<void>((resolve) => setImmediate(resolve));
      } else {
        delay = delay === 0 ? 1 : Math.min(maxDelay, delay * 2);
        await new Promise<void>((resolve) => setTimeout(resolve, delay));
      }
    }
  }

  /** Milliseconds between `start` (recorded earlier) and this event; both must be timing events. */
  elapsedSince(start: CudaEvent): number {
    if (!this.timing || !start.timing) throw new Error("elapsedSince: both events must be created with timing = true");
    const ms: [number] = [0];
    const code = cudart().cudaEventElapsedTime(ms, start.handle, this.handle);
    if (code !== 0) throw statusError(code, "cudaEventElapsedTime", "cudart");
    return ms[0];
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    check(cudart().cudaEventDestroy(this.handle), "cudaEventDestroy");
  }

  private assertLive(): void {
    if (this.destroyed) throw new Error("use of a destroyed CUDA event");
  }
}
