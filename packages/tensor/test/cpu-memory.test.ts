/** CPU backend memory: zeroed allocation, accounting, double-free detection, host round trips. */
import { describe, expect, it } from "vitest";
import { CpuBackend, CpuStorage, cpuBackend } from "../src/cpu";
import { f32ToBf16Bits } from "../src/dtype";
import { makeView, transposedView } from "./cpu-helpers";

describe("cpu backend memory", () => {
  it("identifies itself and is a singleton", () => {
    expect(cpuBackend()).toBe(cpuBackend());
    expect(cpuBackend().name).toBe("cpu");
    expect(cpuBackend().device).toBe("cpu");
  });

  it("allocates zero-filled storage of the right format", () => {
    const be = new CpuBackend();
    for (const [dtype, ctor, size] of [
      ["float32", Float32Array, 4],
      ["float64", Float64Array, 8],
      ["bfloat16", Uint16Array, 2],
      ["float16", Uint16Array, 2],
      ["int32", Int32Array, 4],
    ] as const) {
      const s = be.alloc(dtype, 10);
      expect(s).toBeInstanceOf(CpuStorage);
      expect(s.data).toBeInstanceOf(ctor);
      expect(s.length).toBe(10);
      expect(s.byteLength).toBe(10 * size);
      expect(Array.from(s.data).every((v) => v === 0)).toBe(true);
    }
  });

  it("tracks allocated, reserved and peak bytes", () => {
    const be = new CpuBackend();
    const a = be.alloc("float32", 100);
    const b = be.alloc("float64", 10);
    expect(be.memoryStats()).toEqual({ allocated: 480, reserved: 480, peak: 480 });
    be.free(a);
    expect(be.memoryStats()).toEqual({ allocated: 80, reserved: 80, peak: 480 });
    be.resetPeak();
    expect(be.memoryStats().peak).toBe(80);
    const c = be.alloc("bfloat16", 8);
    expect(be.memoryStats().peak).toBe(96);
    be.free(b);
    be.free(c);
    expect(be.memoryStats().allocated).toBe(0);
  });

  it("throws on double free and on use after free", () => {
    const be = new CpuBackend();
    const s = be.alloc("float32", 4);
    be.free(s);
    expect(() => be.free(s)).toThrow(/already freed/);
    const v = { storage: s, shape: [4], strides: [1], offset: 0 };
    expect(() => be.read(v)).toThrow(/freed/);
    expect(be.memoryStats().allocated).toBe(0);
  });

  it("round-trips host data in storage format and reads strided views contiguously", () => {
    const be = new CpuBackend();
    const bits = new Uint16Array([f32ToBf16Bits(1.5), f32ToBf16Bits(-2), 0x7fc0]);
    const s = be.fromHost(bits, "bfloat16");
    bits[0] = 0; // fromHost copies
    expect(Array.from(be.read({ storage: s, shape: [3], strides: [1], offset: 0 }) as Uint16Array)).toEqual([
      f32ToBf16Bits(1.5),
      f32ToBf16Bits(-2),
      0x7fc0,
    ]);
    // Values given in a non-storage array are converted.
    const conv = be.fromHost(new Float32Array([1.5, -2]), "bfloat16");
    expect(Array.from(conv.data)).toEqual([f32ToBf16Bits(1.5), f32ToBf16Bits(-2)]);
    const t = transposedView([1, 2, 3, 4, 5, 6], [2, 3]);
    const r = be.read(t);
    expect(r).toBeInstanceOf(Float32Array);
    expect(Array.from(r)).toEqual([1, 2, 3, 4, 5, 6]);
    const b = makeView([1, 2, 3], [3], "float16", [2], 3);
    expect(Array.from(cpuBackend().read(b)).length).toBe(3);
  });

  it("rejects storages of another backend", () => {
    const be = new CpuBackend();
    const foreign = { backend: { name: "cuda" }, dtype: "float32", length: 1, byteLength: 4 } as never;
    expect(() => be.read({ storage: foreign, shape: [1], strides: [1], offset: 0 })).toThrow(/cuda/);
  });
});
