/**
 * The `Work` handle every process-group call returns (DESIGN.md decision 7): a promise with a
 * completion flag. A failure nobody waits for must not crash the process as an unhandled
 * rejection — the group has already recorded it, and the next collective reports it.
 */
import type { Work } from "@fulgur/core";

export class PromiseWork implements Work {
  private done = false;
  private readonly promise: Promise<void>;

  constructor(promise: Promise<unknown>) {
    this.promise = promise.then(
      () => {
        this.done = true;
      },
      (err: unknown) => {
        this.done = true;
        throw err;
      },
    );
    this.promise.catch(() => {});
  }

  wait(): Promise<void> {
    return this.promise;
  }

  /** True once the operation has finished, successfully or not. */
  isCompleted(): boolean {
    return this.done;
  }
}
