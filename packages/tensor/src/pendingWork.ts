/** Helpers for work under way beside the calling thread (`PendingWork`). */
import type { PendingWork } from "./backend";

/** Work done already. */
export const DONE_WORK: PendingWork = Object.freeze({ poll: () => true, wait: () => {} });

/** Waits for work whose result no longer matters (an error is already on its way, or teardown): its own error is dropped, not the first. */
export function settleWork(work: PendingWork): void {
  try {
    work.wait();
  } catch {
    // This error is not the first.
  }
}
