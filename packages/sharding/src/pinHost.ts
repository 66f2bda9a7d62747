/**
 * Page-locking host memory for a device's copies: a pinned buffer is read and written by direct
 * DMA, so an upload or download never waits on the host.
 */
import { type HostArray, type Tensor, getBackend } from "@fulgur/tensor";

/**
 * Pins a host tensor's memory with `device`'s backend. Returns the array to unpin later, or null
 * where nothing was pinned: a tensor not in host memory, a CPU device, or a backend that does not pin.
 */
export function pinHostTensor(device: string, t: Tensor): HostArray | null {
  if (t.device !== "cpu" || device === "cpu" || !t.backend.readShared) return null;
  const backend = getBackend(device);
  if (!backend.pinHost) return null;
  const array = t.backend.readShared(t);
  backend.pinHost(array);
  return array;
}
