/**
 * A `Work` over a promise (DESIGN.md decision 7), for operations that complete on the event loop.
 * A failure nobody waits for must not crash the process as an unhandled rejection — the group has
 * already recorded it, and the next collective reports it.
 *
 * A promise cannot be waited for without the event loop, so `synchronize()` can only report a work
 * that has already finished; the CPU process group's own Work (threadWork.ts) blocks instead.
 */
import type { Work } from "@fulgur/core";

export class PromiseWork implements Work {
  private done = false;
  private failure: { error: unknown } | undefined;
  private readonly promise: Promise<void>;

  constructor(promise: Promise<unknown>) {
    this.promise = promise.then(
      () => {
        this.done = true;
      },
      (err: unknown) => {
        this.done = true;
        this.failure = { error: err };
        throw err;
      },
    );
    this.promise.catch(() => {});
  }

  wait(): Promise<void> {
    return this.promise;
  }

  /** Returns, or throws the failure, once the work has finished; throws a TypeError before. */
  synchronize(): void {
    if (!this.done) {
      throw new TypeError("synchronize(): this Work completes on the event loop and has not finished yet; await wait() instead");
    }
    if (this.failure) throw this.failure.error;
  }

  /** True once the operation has finished, successfully or not. */
  isCompleted(): boolean {
    return this.done;
  }
}
