/**
 * [Note: reusing shared memory]: large freed shared buffers go to the next allocation of their size,
 * cleared for `alloc` (the CPU backend promises zeroed memory) and as they were for
 * `allocForOverwrite`; the pool is bounded per byte length and in all.
 */
import { describe, expect, it } from "vitest";
import { getBackend } from "../src/index";
import type { CpuStorage } from "../src/cpu/storage";
import { POOL_MIN_BYTES, POOL_PER_LENGTH, SharedBufferPool } from "../src/cpu/sharedBufferPool";

const cpu = getBackend("cpu");
const large = POOL_MIN_BYTES / 4;

describe("the CPU backend's shared buffer pool", () => {
  it("hands a freed large shared buffer to the next allocation of its size, zeroed for alloc, as left for allocForOverwrite", () => {
    const a = cpu.alloc("float32", large) as CpuStorage;
    const buffer = a.data.buffer;
    expect(buffer).toBeInstanceOf(SharedArrayBuffer);
    a.data.fill(7);
    cpu.free(a);
    const b = cpu.alloc("float32", large) as CpuStorage;
    expect(b.data.buffer).toBe(buffer);
    expect(b.data.every((x) => x === 0)).toBe(true);
    b.data.fill(3);
    cpu.free(b);
    // The same bytes in another dtype: the read back from disk overwrites them, so they are not cleared.
    const c = cpu.allocForOverwrite!("bfloat16", 2 * large) as CpuStorage;
    expect(c.data.buffer).toBe(buffer);
    expect(new Float32Array(c.data.buffer as SharedArrayBuffer)[0]).toBe(3);
    // A different size does not take it.
    cpu.free(c);
    const d = cpu.alloc("float32", large + 1) as CpuStorage;
    expect(d.data.buffer).not.toBe(buffer);
    cpu.free(d);
    // The freed storages refuse use, whoever holds their memory now.
    expect(() => cpu.read({ storage: a, shape: [1], strides: [1], offset: 0 })).toThrow(/after it was freed/);
  });

  it("keeps small buffers out, at most POOL_PER_LENGTH of one length, and no more than its limit in all", () => {
    const pool = new SharedBufferPool(3 * POOL_MIN_BYTES);
    expect(pool.give(new SharedArrayBuffer(POOL_MIN_BYTES - 1))).toBe(false);
    expect(pool.give(new SharedArrayBuffer(POOL_MIN_BYTES))).toBe(true);
    expect(pool.give(new SharedArrayBuffer(2 * POOL_MIN_BYTES))).toBe(true);
    expect(pool.give(new SharedArrayBuffer(POOL_MIN_BYTES))).toBe(false);
    expect(pool.bytes).toBe(3 * POOL_MIN_BYTES);
    expect(pool.take(POOL_MIN_BYTES + 1)).toBeNull();
    expect(pool.take(2 * POOL_MIN_BYTES)?.byteLength).toBe(2 * POOL_MIN_BYTES);
    expect(pool.bytes).toBe(POOL_MIN_BYTES);
    const roomy = new SharedBufferPool(Number.MAX_SAFE_INTEGER);
    const kept = Array.from({ length: POOL_PER_LENGTH + 2 }, () => roomy.give(new SharedArrayBuffer(POOL_MIN_BYTES)));
    expect(kept.filter(Boolean)).toHaveLength(POOL_PER_LENGTH);
  });
});
