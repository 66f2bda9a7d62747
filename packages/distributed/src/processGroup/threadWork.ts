/**
 * The `Work` of the CPU process group: one operation running in the transport's worker thread.
 * It settles once, from whichever comes first: the reply delivered by the event loop (`wait()`),
 * or the status word seen by a blocked `synchronize()` or a polling `isCompleted()`, which read the
 * reply synchronously. Settling writes the result into the caller's tensors, so the write-back
 * happens exactly once, before either path reports success.
 *
 * A failure nobody waits for must not crash the process as an unhandled rejection: the group has
 * already recorded it, and the next collective reports it.
 */
import type { Work } from "@fulgur/core";
import { GroupFailedError } from "../errors";
import { SlotStatus, statusWord } from "./worker/protocol";
import type { GroupThread } from "./worker/thread";

export class ThreadWork implements Work {
  private state: "pending" | "completed" | "failed" = "pending";
  private error: Error | undefined;
  private readonly promise: Promise<void>;
  private resolve!: () => void;
  private reject!: (err: Error) => void;

  constructor(
    private readonly thread: GroupThread,
    /** The operation's shared memory; its status word says when the worker is done. */
    private readonly slot: SharedArrayBuffer,
    /** The group's timeout, bounding how long a silent worker is waited for. */
    private readonly timeoutMs: number,
    /** Copies the result from the slot into the caller's tensors. */
    private readonly writeBack: () => void,
  ) {
    this.promise = new Promise<void>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
    this.promise.catch(() => {});
  }

  /** The handler for the operation's reply (see GroupThread.send). */
  readonly settle = (error: Error | undefined): void => {
    if (this.state !== "pending") return;
    if (!error) {
      try {
        this.writeBack();
      } catch (err) {
        error = err as Error;
      }
    }
    if (error) {
      this.state = "failed";
      this.error = error;
      this.reject(error);
    } else {
      this.state = "completed";
      this.resolve();
    }
  };

  wait(): Promise<void> {
    return this.promise;
  }

  /** Blocks until the result is in the caller's tensors (see [Note: blocking wait]); throws the operation's error. */
  synchronize(): void {
    if (this.state === "pending") {
      try {
        this.thread.block(this.slot, this.timeoutMs);
      } catch (err) {
        this.settle(err as Error);
      }
      this.takeReply();
    }
    if (this.error) throw this.error;
  }

  /** True once the operation has finished; its result is then in the caller's tensors already. */
  isCompleted(): boolean {
    if (this.state === "pending" && Atomics.load(statusWord(this.slot), 0) !== SlotStatus.Pending) this.takeReply();
    return this.state !== "pending";
  }

  /** Settles from the reply the worker posted before setting the status word. */
  private takeReply(): void {
    this.thread.drain();
    if (this.state !== "pending") return;
    // Not reached while the worker keeps [Note: reply before status]; never leave a caller guessing.
    const status = Atomics.load(statusWord(this.slot), 0);
    this.settle(status === SlotStatus.Done ? undefined : new GroupFailedError("the process group's worker thread settled an operation without a reply"));
  }
}
