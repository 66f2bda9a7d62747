/**
 * BackwardSyncControl: inside an accumulation window the Trainer runs backward under
 * `noBackwardSync`, so a strategy that synchronises gradients during backward (DDP) skips it there.
 * This one only counts which backward passes it would have synchronised.
 */
import type { BackwardSyncControl } from "@fulgur/core";
import type { Module } from "@fulgur/nn";
import { SingleDeviceStrategy } from "@fulgur/strategy-kit";
import type { Tensor } from "@fulgur/tensor";

export class SyncCountingStrategy extends SingleDeviceStrategy implements BackwardSyncControl {
  override readonly name: string = "sync_counting";
  readonly backwards = { synced: 0, skipped: 0 };
  private sync = true;

  noBackwardSync<T>(_module: Module, fn: () => T): T {
    const previous = this.sync;
    this.sync = false;
    try {
      return fn();
    } finally {
      this.sync = previous;
    }
  }

  override backward(loss: Tensor): void {
    super.backward(loss);
    if (this.sync) this.backwards.synced++;
    else this.backwards.skipped++;
  }
}
