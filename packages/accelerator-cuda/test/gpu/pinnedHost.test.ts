/**
 * Page-locked host arrays (offloaded slices): uploads from them and downloads into them skip the
 * staging ring, and `readIntoAsync` returns before the copy is done. What a user of offload
 * relies on: the values arrive whole, a download is ordered after the work queued before it and
 * unaffected by freeing its source (the memory is not reused before the copy has read it), and
 * unpinning releases the pages.
 */
import type { View } from "@fulgur/tensor";
import { describe, expect, it } from "vitest";
import { isPinned, pinnedBufferCount } from "../../src/hostPinning";
import { NO_GPU, gpu, hasGpu } from "./harness";

const N = (16 << 20) + 5; // bigger than the staging ring (4 slots of 8 MiB), odd length

function view(storage: View["storage"], n: number): View {
  return { storage, shape: [n], strides: [1], offset: 0 };
}

function sharedFloats(n: number): Float32Array {
  return new Float32Array(new SharedArrayBuffer(n * 4));
}

describe.skipIf(!hasGpu)("pinned host memory on CUDA", () => {
  it("uploads from and downloads into pinned arrays, whole and in order", () => {
    const b = gpu();
    const before = pinnedBufferCount();
    const src = sharedFloats(N);
    for (let i = 0; i < N; i++) src[i] = (i % 1000) - 500.25;
    b.pinHost!(src);
    b.pinHost!(src); // counted: two pins need two unpins
    expect(isPinned(src)).toBe(true);
    const dev = b.fromHost(src, "float32");
    const out = sharedFloats(N);
    b.pinHost!(out);
    // The copy is ordered after the upload and the scaling queued before it ...
    const scaled = b.alloc("float32", N);
    b.unary("mul_scalar", view(dev, N), view(scaled, N), 2);
    const pending = b.readIntoAsync!(view(scaled, N), out);
    // ... and untouched by freeing its source and reusing that memory at once.
    b.free(scaled);
    const reuse = b.alloc("float32", N);
    b.unary("mul_scalar", view(dev, N), view(reuse, N), -1);
    pending.wait();
    expect(pending.poll()).toBe(true);
    for (const i of [0, 1, 999, 1000, N >> 1, N - 1]) expect(out[i], `element ${i}`).toBe(2 * src[i]);
    let bad = 0;
    for (let i = 0; i < N; i++) if (out[i] !== 2 * src[i]) bad++;
    expect(bad).toBe(0);
    // readInto into pinned memory (the synchronous path) gives the same values.
    const again = sharedFloats(N);
    b.pinHost!(again);
    b.readInto!(view(reuse, N), again);
    expect(again[N - 1]).toBe(-src[N - 1]);
    for (const a of [src, src, out, again]) b.unpinHost!(a);
    expect(isPinned(src)).toBe(false);
    expect(pinnedBufferCount()).toBe(before);
    for (const s of [dev, reuse]) b.free(s);
  });

  it("an upload (its own stream) read first by a download, by a kernel, or freed at once: whole values, memory reused safely", () => {
    const b = gpu();
    const src = sharedFloats(N);
    for (let i = 0; i < N; i++) src[i] = (i % 777) * 0.5 - 100;
    b.pinHost!(src);
    // Read first on the host copy stream: that stream waits for the upload, compute does not.
    const first = b.fromHost(src, "float32");
    const out = sharedFloats(N);
    b.pinHost!(out);
    const pending = b.readIntoAsync!(view(first, N), out);
    // Freed while both copies may still run: the block goes back only after them, and the next
    // allocation (likely the same block) is overwritten by compute only then.
    b.free(first);
    const reuse = b.alloc("float32", N);
    b.fill(view(reuse, N), 3);
    pending.wait();
    let bad = 0;
    for (let i = 0; i < N; i++) if (out[i] !== src[i]) bad++;
    expect(bad).toBe(0);
    // Read first by a kernel on compute, right after the upload is queued.
    const second = b.fromHost(src, "float32");
    const doubled = b.alloc("float32", N);
    b.unary("mul_scalar", view(second, N), view(doubled, N), 2);
    const back = b.read(view(doubled, N)) as Float32Array;
    bad = 0;
    for (let i = 0; i < N; i++) if (back[i] !== 2 * src[i]) bad++;
    expect(bad).toBe(0);
    // Freed before any use, then unpinned: neither the free nor the unpinning runs under the copy.
    b.free(b.fromHost(src, "float32"));
    b.unpinHost!(src);
    b.unpinHost!(out);
    expect((b.read(view(reuse, N)) as Float32Array)[N - 1]).toBe(3);
    for (const s of [second, doubled, reuse]) b.free(s);
  });

  it("falls back to a synchronous copy into memory that is not pinned", () => {
    const b = gpu();
    const dev = b.fromHost(Float32Array.from([1, 2, 3]), "float32");
    const out = new Float32Array(3);
    const pending = b.readIntoAsync!(view(dev, 3), out);
    expect(pending.poll()).toBe(true);
    expect([...out]).toEqual([1, 2, 3]);
    b.free(dev);
  });
});

describe.skipIf(hasGpu)("pinned host memory on CUDA", () => {
  it(NO_GPU, () => undefined);
});
