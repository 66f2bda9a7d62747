/**
 * Host-side arithmetic that decides what the kernels and cuBLASLt see, checked without a GPU:
 * broadcasting and dim coalescing, rows-with-stride views, the row-major -> cuBLASLt mapping of a
 * matmul, attention's shared-memory budget, and the byte layout of kernel parameters and tables.
 */
import koffi from "koffi";
import type { View } from "@fulgur/tensor";
import { describe, expect, it } from "vitest";
import { coalesce, contiguousStrides, isContiguous, rowsOf, stridesFor } from "../src/ops/layout";
import { alignmentOf, planMatmul, transposedRole } from "../src/ops/matmulPlan";
import { attentionMmaSharedBytes, attentionPath, attentionSharedBytes, headDimBound, mmaAligned } from "../src/ops/attention";
import { ADAMW_CHUNK_BYTES, CHUNK, adamwTable } from "../src/ops/optim";
import { ArgPack } from "../src/launch";

const view = (shape: number[], strides?: number[], offset = 0): View =>
  ({ storage: { dtype: "float32" } as View["storage"], shape, strides: strides ?? contiguousStrides(shape), offset }) as View;

describe("broadcast and coalesce", () => {
  it("broadcasts numpy-style with stride 0 on expanded dims", () => {
    expect(stridesFor(view([3, 1]), [2, 3, 4])).toEqual([0, 1, 0]);
    expect(stridesFor(view([4]), [2, 3, 4])).toEqual([0, 0, 1]);
    expect(() => stridesFor(view([3]), [2, 4])).toThrow(/cannot broadcast \[3\] to \[2, 4\]/);
  });

  it("merges a contiguous tensor into one dim and flags it contiguous", () => {
    const c = coalesce([2, 3, 4], [contiguousStrides([2, 3, 4]), contiguousStrides([2, 3, 4])]);
    expect(c).toEqual({ shape: [24], strides: [[1], [1]], contiguous: true });
  });

  it("keeps a transpose as two dims and a broadcast operand non-contiguous", () => {
    const t = coalesce([3, 4], [[1, 3]]);
    expect(t.shape).toEqual([3, 4]);
    expect(t.contiguous).toBe(false);
    const b = coalesce([5, 6], [[6, 1], [0, 1]]);
    expect(b).toEqual({ shape: [5, 6], strides: [[6, 1], [0, 1]], contiguous: false });
    expect(coalesce([1, 1], [[7, 9]])).toEqual({ shape: [], strides: [[]], contiguous: true });
  });

  it("reads views as rows with a stride when it can", () => {
    expect(rowsOf(view([4, 5]))).toEqual({ rows: 4, cols: 5, rowStride: 5 });
    // A slice of columns [:, 2:5] of an [4, 8] tensor: rows 8 apart.
    expect(rowsOf(view([4, 3], [8, 1], 2))).toEqual({ rows: 4, cols: 3, rowStride: 8 });
    expect(rowsOf(view([2, 3, 5], [15, 5, 1]))).toEqual({ rows: 6, cols: 5, rowStride: 5 });
    // Transposed last dim or non-mergeable outer dims need a copy.
    expect(rowsOf(view([4, 5], [1, 4]))).toBeNull();
    expect(rowsOf(view([2, 3, 5], [40, 10, 1]))).toBeNull();
    expect(isContiguous([2, 1, 3], [3, 99, 1])).toBe(true);
  });
});

describe("matmul plan", () => {
  it("maps a row-major operand to op N and a transposed view to op T", () => {
    expect(transposedRole(6, 5, 5, 1)).toEqual({ rows: 5, cols: 6, ld: 5, op: 0 });
    expect(transposedRole(6, 5, 1, 6)).toEqual({ rows: 6, cols: 5, ld: 6, op: 1 });
    expect(transposedRole(6, 5, 10, 2)).toBeNull();
    // A single row can be read either way; the leading dimension is made valid.
    expect(transposedRole(1, 5, 0, 1)).toEqual({ rows: 5, cols: 1, ld: 5, op: 0 });
  });

  it("computes out = a @ b as out^T = b^T a^T", () => {
    const r = planMatmul(view([6, 5]), view([5, 4]), view([6, 4]));
    expect(r.needsCopy).toBeNull();
    const p = r.plan!;
    expect(p.shape).toEqual({ batch: 1, M: 6, N: 4, K: 5 });
    expect(p.A.layout).toEqual({ rows: 4, cols: 5, ld: 4, op: 0 });
    expect(p.B.layout).toEqual({ rows: 5, cols: 6, ld: 5, op: 0 });
    expect(p.D.layout).toEqual({ rows: 4, cols: 6, ld: 4, op: 0 });
  });

  it("uses op T for a weight transpose (x @ W^T, W [N, K])", () => {
    // b = W.t(): shape [K=5, N=4], strides [1, 5]
    const p = planMatmul(view([6, 5]), view([5, 4], [1, 5]), view([6, 4])).plan!;
    expect(p.A.layout).toEqual({ rows: 5, cols: 4, ld: 5, op: 1 });
  });

  it("folds the batch into M when the weight is shared and rows run on", () => {
    const p = planMatmul(view([2, 3, 8]), view([8, 16]), view([2, 3, 16])).plan!;
    expect(p.folded).toBe(true);
    expect(p.shape).toEqual({ batch: 1, M: 6, N: 16, K: 8 });
    expect(p.B.layout.cols).toBe(6);
  });

  it("keeps real batches strided, with stride 0 for a broadcast operand", () => {
    const p = planMatmul(view([2, 5, 7]), view([2, 7, 3]), view([2, 5, 3])).plan!;
    expect(p.shape.batch).toBe(2);
    expect([p.A.batchStride, p.B.batchStride, p.D.batchStride]).toEqual([21, 35, 15]);
    const q = planMatmul(view([3, 5, 7]), view([1, 7, 3]), view([3, 5, 3], [16, 3, 1])).plan!;
    expect(q.folded).toBe(false);
    expect(q.A.batchStride).toBe(0);
  });

  it("asks for a copy of an operand with no cuBLAS layout, and checks shapes", () => {
    expect(planMatmul(view([6, 5], [10, 2]), view([5, 4]), view([6, 4])).needsCopy).toBe("a");
    expect(planMatmul(view([6, 5]), view([5, 4]), view([6, 4], [1, 6])).needsCopy).toBe("out");
    expect(() => planMatmul(view([6, 5]), view([4, 4]), view([6, 4]))).toThrow(/does not give out/);
    expect(() => planMatmul(view([2, 6, 5]), view([3, 5, 4]), view([2, 6, 4]))).toThrow(/b has batch 3 but out has batch 2/);
  });

  it("reports pointer alignment up to 256 bytes", () => {
    expect(alignmentOf(0x7f0000000000n)).toBe(256);
    expect(alignmentOf(0x7f0000000002n)).toBe(2);
    expect(alignmentOf(0x7f0000000010n)).toBe(16);
  });
});

describe("attention budget", () => {
  it("fits the head-dim 128 kernels in an H100/A100 block (227 / 163 KiB opt-in)", () => {
    for (const k of ["fwd", "dkdv", "dq"] as const) {
      expect(attentionSharedBytes(k, 128)).toBeLessThanOrEqual(163 * 1024);
      expect(attentionSharedBytes(k, 64)).toBeLessThan(attentionSharedBytes(k, 128));
    }
    expect(attentionSharedBytes("fwd", 64)).toBeLessThanOrEqual(48 * 1024);
  });

  it("picks the smallest instantiation and refuses head dims above 128", () => {
    expect(headDimBound(16, 16)).toBe(64);
    expect(headDimBound(64, 80)).toBe(128);
    expect(() => headDimBound(160, 64)).toThrow(/head dim 160 is above 128/);
  });
});

describe("attention path selection (attention_mma.cu vs attention.cu)", () => {
  const shp = (T: number, D: number) => [4, 16, T, D];
  const all = (dt: string, n = 4) => new Array<string>(n).fill(dt);

  it("takes the tensor-core kernels for bf16/f16, head dim 64 or 128, Tq == Tk", () => {
    expect(attentionPath(shp(1024, 128), shp(1024, 128), shp(1024, 128), all("bfloat16"))).toEqual({ kind: "mma", D: 128, dtype: "bf16" });
    expect(attentionPath(shp(100, 64), shp(100, 64), shp(100, 64), all("float16", 8))).toEqual({ kind: "mma", D: 64, dtype: "f16" });
    // T need not be a multiple of 64.
    expect(attentionPath(shp(1, 64), shp(1, 64), shp(1, 64), all("bfloat16")).kind).toBe("mma");
  });

  it("keeps the fp32 kernels for every other case", () => {
    const fp32 = (q: number[], k: number[], v: number[], dts: string[]) => attentionPath(q, k, v, dts).kind;
    expect(fp32(shp(64, 64), shp(64, 64), shp(64, 64), all("float32"))).toBe("fp32");
    expect(fp32(shp(64, 64), shp(64, 64), shp(64, 64), all("float64"))).toBe("fp32");
    expect(fp32(shp(64, 32), shp(64, 32), shp(64, 32), all("bfloat16"))).toBe("fp32");
    expect(fp32(shp(64, 80), shp(64, 80), shp(64, 80), all("bfloat16"))).toBe("fp32");
    expect(fp32(shp(20, 64), shp(45, 64), shp(45, 64), all("bfloat16"))).toBe("fp32");
    expect(fp32(shp(64, 64), shp(64, 64), shp(64, 32), all("bfloat16"))).toBe("fp32");
    expect(fp32(shp(64, 128), shp(64, 128), shp(64, 128), ["bfloat16", "bfloat16", "bfloat16", "float32"])).toBe("fp32");
    expect(fp32(shp(64, 128), shp(64, 128), shp(64, 128), ["float16", "bfloat16", "float16", "float16"])).toBe("fp32");
    expect(attentionPath(shp(64, 32), shp(64, 32), shp(64, 32), all("bfloat16"))).toEqual({ kind: "fp32", dmax: 64 });
  });

  it("sizes the tensor-core kernels' shared memory like FaCfg<D> and fits an A100/H100 block", () => {
    // A tile is 64 x (D + 8) 16-bit values: 9216 bytes at D = 64, 17408 at D = 128.
    expect(attentionMmaSharedBytes("fwd", 64)).toBe(5 * 9216);
    expect(attentionMmaSharedBytes("dkdv", 64)).toBe(6 * 9216 + 1024);
    expect(attentionMmaSharedBytes("dq", 64)).toBe(6 * 9216);
    expect(attentionMmaSharedBytes("fwd", 128)).toBe(5 * 17408);
    expect(attentionMmaSharedBytes("dkdv", 128)).toBe(6 * 17408 + 1024);
    expect(attentionMmaSharedBytes("dq", 128)).toBe(6 * 17408);
    for (const k of ["fwd", "dkdv", "dq"] as const) {
      expect(attentionMmaSharedBytes(k, 128)).toBeLessThanOrEqual(163 * 1024);
      // Two blocks per H100 SM (228 KiB, 1 KiB reserved per block).
      expect(2 * (attentionMmaSharedBytes(k, 128) + 1024)).toBeLessThanOrEqual(228 * 1024);
    }
  });

  it("stages operands that cp.async cannot read in 16-byte pieces", () => {
    expect(mmaAligned(256n, [4, 16, 1024, 128], [2097152, 131072, 128, 1])).toBe(true);
    // q as GPT makes it: [B, T, H, D] viewed as [B, H, T, D].
    expect(mmaAligned(0n, [4, 16, 1024, 128], [2097152, 128, 2048, 1])).toBe(true);
    expect(mmaAligned(8n, [1, 2, 64, 64], [8192, 4096, 64, 1])).toBe(false);
    expect(mmaAligned(0n, [1, 2, 64, 64], [8196, 4100, 64, 1])).toBe(false);
    // A unit dim's stride never advances.
    expect(mmaAligned(0n, [1, 1, 64, 64], [3, 5, 64, 1])).toBe(true);
  });
});

describe("kernel parameter bytes", () => {
  it("writes a pointer per parameter to its value, values aligned, structs in C layout", () => {
    const a = ArgPack.begin().ptr(0x1234n).i32(-7).f64(1.5).shape8([3, 4]).strides8([4, 1]).f32(0.25);
    expect(a.length).toBe(6);
    const table = new DataView(koffi.view(a.params, 16384));
    const slot = (i: number) => Number(table.getBigUint64(i * 8, true) - a.params);
    expect(table.getBigUint64(slot(0), true)).toBe(0x1234n);
    expect(table.getInt32(slot(1), true)).toBe(-7);
    expect(slot(2) % 8).toBe(0);
    expect(table.getFloat64(slot(2), true)).toBe(1.5);
    const s = slot(3);
    expect(s % 8).toBe(0);
    expect([table.getBigInt64(s, true), table.getBigInt64(s + 8, true), table.getBigInt64(s + 16, true)]).toEqual([3n, 4n, 1n]);
    expect(table.getInt32(s + 64, true)).toBe(2);
    expect(table.getBigInt64(slot(4) + 8, true)).toBe(1n);
    expect(table.getBigInt64(slot(4) + 16, true)).toBe(0n);
    expect(table.getFloat32(slot(5), true)).toBe(0.25);
    expect(() => ArgPack.begin().shape8([1, 2, 3, 4, 5, 6, 7, 8, 9])).toThrow(/at most 8/);
  });

  it("splits AdamW tensors into chunk rows with offset pointers", () => {
    const n = CHUNK + 10;
    const bytes = adamwTable([{ p: 0x1000n, g: 0x2000n, m: 0x3000n, v: 0x4000n, n, dts: [0, 2, 0, 0], sizes: [4, 2, 4, 4] }]);
    expect(bytes.length).toBe(2 * ADAMW_CHUNK_BYTES);
    const dv = new DataView(bytes.buffer);
    const row = ADAMW_CHUNK_BYTES;
    expect(dv.getBigUint64(row, true)).toBe(0x1000n + BigInt(CHUNK * 4));
    expect(dv.getBigUint64(row + 8, true)).toBe(0x2000n + BigInt(CHUNK * 2));
    expect(dv.getBigUint64(row + 32, true)).toBe(0n);
    expect(dv.getBigInt64(row + 40, true)).toBe(10n);
    expect(dv.getInt32(52, true)).toBe(2);
  });

  it("gives each chunk row its slice of the low-precision copy, and its dtype", () => {
    const n = CHUNK + 10;
    const bytes = adamwTable([
      { p: 0x1000n, g: 0x2000n, m: 0x3000n, v: 0x4000n, n, dts: [0, 0, 0, 0], sizes: [4, 4, 4, 4], lp: { ptr: 0x5000n, dt: 3, size: 2 } },
    ]);
    expect(ADAMW_CHUNK_BYTES).toBe(72);
    const dv = new DataView(bytes.buffer);
    expect(dv.getBigUint64(32, true)).toBe(0x5000n);
    expect(dv.getBigUint64(ADAMW_CHUNK_BYTES + 32, true)).toBe(0x5000n + BigInt(CHUNK * 2));
    expect(dv.getInt32(64, true)).toBe(3);
  });
});
