/**
 * Pinned host buffers for the later micro-batches' offloaded gradients on their way down ([Note:
 * later micro-batches added beside backward] in flatUnit.ts), shared by the units of an engine and
 * reused by size: page-locking a buffer costs far more than a copy into it, and the buffers in use
 * at once are only those under way (a few units' slices), not one per unit.
 */
import { type HostArray, type Tensor, getBackend, sharedHostMemory, zeros } from "@fulgur/tensor";
import { pinHostTensor } from "./pinHost";

export class HostScratch {
  private readonly free = new Map<number, Tensor[]>();
  private readonly made: { tensor: Tensor; pinned: HostArray | null }[] = [];

  /** `device`: the device whose backend page-locks the buffers (its copies are then direct DMA). */
  constructor(private readonly device: string) {}

  /** An fp32 buffer of `numel` elements in shared host memory, pinned; its values are not cleared. */
  take(numel: number): Tensor {
    const reused = this.free.get(numel)?.pop();
    if (reused) return reused;
    const tensor = sharedHostMemory(() => zeros([numel], { dtype: "float32", device: "cpu" })).untrack();
    this.made.push({ tensor, pinned: pinHostTensor(this.device, tensor) });
    return tensor;
  }

  /** Hands a buffer back for the next `take` of its size. */
  give(tensor: Tensor): void {
    const list = this.free.get(tensor.numel) ?? [];
    list.push(tensor);
    this.free.set(tensor.numel, list);
  }

  /** Bytes of host memory the buffers hold. */
  get bytes(): number {
    return this.made.reduce((n, m) => n + m.tensor.numel * 4, 0);
  }

  /** Unpins and frees every buffer (the engine's teardown). */
  dispose(): void {
    const backend = getBackend(this.device);
    for (const { tensor, pinned } of this.made.splice(0)) {
      if (pinned) backend.unpinHost?.(pinned);
      tensor.dispose();
    }
    this.free.clear();
  }
}
