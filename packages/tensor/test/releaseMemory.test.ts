/**
 * Releasing a storage's memory while its tensors stay (how FSDP frees gathered parameters that
 * autograd saved views of): the bytes leave the device's count, a read fails naming why, and
 * after restoring, data written through the storage is seen by every view made before.
 */
import { describe, expect, it } from "vitest";
import { memoryStats, tensor, zeros } from "../src";

describe("StorageRef.releaseMemory / restoreMemory", () => {
  it("frees the bytes, refuses reads, and gives views new memory on restore", () => {
    const flat = zeros([8]).untrack();
    const view = flat.narrow(0, 2, 3).untrack();
    const before = memoryStats("cpu").liveBytes;
    flat.storageRef.releaseMemory();
    expect(flat.storageRef.hasMemory).toBe(false);
    expect(memoryStats("cpu").liveBytes).toBe(before - 32);
    expect(() => view.toArray()).toThrow(/its memory was released/);
    flat.storageRef.restoreMemory();
    expect(memoryStats("cpu").liveBytes).toBe(before);
    const src = tensor([0, 1, 2, 3, 4, 5, 6, 7]);
    flat.copy_(src);
    src.dispose();
    expect(view.toArray()).toEqual([2, 3, 4]);
    flat.storageRef.releaseMemory();
    flat.storageRef.releaseMemory();
    view.dispose();
    flat.dispose();
    expect(memoryStats("cpu").liveBytes).toBe(before - 32);
  });

  it("marks every range written on restore, so derived copies are made again", () => {
    const flat = zeros([4]).untrack();
    const v0 = flat.version;
    flat.storageRef.releaseMemory();
    flat.storageRef.restoreMemory();
    expect(flat.version).not.toBe(v0);
    flat.dispose();
  });
});
