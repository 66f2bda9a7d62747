/**
 * Freeing a storage's memory while its tensors stay (see flatUnit.ts, [Note: views outlive the
 * memory]). Uses @fulgur/tensor's StorageRef.releaseMemory/restoreMemory when the installed
 * version has them; without them the memory simply stays until the unit is disposed, which is
 * correct but holds SHARD_GRAD_OP's memory under FULL_SHARD.
 */
import type { Tensor } from "@fulgur/tensor";

interface ResizableStorage {
  releaseMemory?(): void;
  restoreMemory?(): void;
}

export function releaseMemory(t: Tensor): void {
  (t.storageRef as unknown as ResizableStorage).releaseMemory?.();
}

export function restoreMemory(t: Tensor): void {
  (t.storageRef as unknown as ResizableStorage).restoreMemory?.();
}

export function canReleaseMemory(t: Tensor): boolean {
  return typeof (t.storageRef as unknown as ResizableStorage).releaseMemory === "function";
}
