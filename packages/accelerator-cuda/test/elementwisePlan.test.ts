/**
 * Which elementwise and column-reduction kernel a launch gets for which layouts, checked without a
 * GPU: the contiguous fast path (16-byte vectors only when every pointer is aligned), the row-vector
 * broadcast, the tiled transpose, the generic fallback, and the two-stage reduce_cols sizing.
 */
import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { planElementwise } from "../src/ops/elementwise";
import { coalesce } from "../src/ops/layout";
import { MIN_CHUNK_ROWS, PART_BLOCKS_PER_SM, PART_WARPS, planReduceCols } from "../src/ops/reduce";

const A = 0x7f0000000000n;
const plan = (kind: Parameters<typeof planElementwise>[0], shape: number[], strides: number[][], ptrs: bigint[]) =>
  planElementwise(kind, coalesce(shape, strides), ptrs);

describe("elementwise kernel selection", () => {
  it("takes the flat kernel for contiguous same-shape operands, vectorised only when all pointers are aligned", () => {
    const c = [[12, 4, 1], [12, 4, 1], [12, 4, 1]];
    expect(plan("binary", [2, 3, 4], c, [A, A + 32n, A + 4096n])).toEqual({ kernel: "flat", vec: true });
    expect(plan("binary", [2, 3, 4], c, [A, A + 2n, A])).toEqual({ kernel: "flat", vec: false });
    expect(plan("copy", [1001], [[1], [1]], [A, A])).toEqual({ kernel: "flat", vec: true });
    expect(plan("unary", [7, 9], [[9, 1], [9, 1]], [A + 8n, A])).toEqual({ kernel: "flat", vec: false });
    expect(plan("fill", [5], [[1]], [A])).toEqual({ kernel: "flat", vec: true });
    expect(plan("where", [20], [[1], [1], [1], [1]], [A, A, A, A])).toEqual({ kernel: "flat", vec: true });
  });

  it("takes the row-broadcast kernel for [R, C] op [C], either side", () => {
    expect(plan("binary", [4096, 2048], [[2048, 1], [2048, 1], [0, 1]], [A, A, A])).toEqual({
      kernel: "rowBroadcast",
      rowOperand: 2,
      rows: 4096,
      cols: 2048,
      ld: 2048,
      vec: true,
    });
    // [B, T, C] + [C] coalesces to [B*T, C].
    expect(plan("binary", [4, 8, 64], [[512, 64, 1], [0, 0, 1], [512, 64, 1]], [A, A, A])).toMatchObject({ kernel: "rowBroadcast", rowOperand: 1, rows: 32, cols: 64 });
    // Odd width or a misaligned row vector: same kernel, scalar.
    expect(plan("binary", [5, 33], [[33, 1], [33, 1], [0, 1]], [A, A, A])).toMatchObject({ kernel: "rowBroadcast", vec: false });
    expect(plan("binary", [5, 64], [[64, 1], [64, 1], [0, 1]], [A, A, A + 4n])).toMatchObject({ kernel: "rowBroadcast", vec: false });
    // Column broadcast and 3-d broadcasts stay generic.
    expect(plan("binary", [4, 3, 6], [[18, 6, 1], [6, 0, 1], [0, 6, 1]], [A, A, A])).toEqual({ kernel: "generic" });
    expect(plan("binary", [5, 64], [[64, 1], [64, 1], [1, 0]], [A, A, A])).toEqual({ kernel: "generic" });
    // Not for unary or copy.
    expect(plan("copy", [5, 64], [[64, 1], [0, 1]], [A, A])).toEqual({ kernel: "generic" });
  });

  it("takes the tiled transpose for a plain (or batched) 2-D transposing copy", () => {
    // dst [R, C] contiguous, src the transpose of a contiguous [C, R].
    expect(plan("copy", [6, 5], [[5, 1], [1, 6]], [A, A])).toEqual({ kernel: "transpose", A: 6, B: 5, ls: 6, ld: 5, batch: 1, sb: 0, db: 0 });
    // Transposed destination, contiguous source.
    expect(plan("copy", [6, 5], [[1, 6], [5, 1]], [A, A])).toEqual({ kernel: "transpose", A: 5, B: 6, ls: 5, ld: 6, batch: 1, sb: 0, db: 0 });
    expect(plan("copy", [3, 6, 5], [[30, 5, 1], [30, 1, 6]], [A, A])).toEqual({ kernel: "transpose", A: 6, B: 5, ls: 6, ld: 5, batch: 3, sb: 30, db: 30 });
    // A strided, non-transposing copy and a 4-d permutation stay generic.
    expect(plan("copy", [4, 5], [[10, 2], [5, 1]], [A, A])).toEqual({ kernel: "generic" });
    expect(plan("copy", [2, 3, 4, 5], [[60, 20, 5, 1], [60, 5, 1, 15]], [A, A])).toEqual({ kernel: "generic" });
  });
});

describe("two-stage column reduction plan", () => {
  const col = (rows: number, cols: number, ld = cols) => [coalesce([cols], [[1]]), coalesce([rows], [[ld]])] as const;

  it("fills the GPU with at least 4 blocks per SM for the 1b bias gradients", () => {
    for (const cols of [2048, 4096, 8192]) {
      const [o, i] = col(4096, cols);
      const p = planReduceCols(o, i, A, 132)!;
      expect(p.vec).toBe(true);
      expect(p.colBlocks).toBe(cols / 256);
      expect(p.colBlocks * p.chunks).toBeGreaterThanOrEqual(4 * 132);
      expect(p.rowsPerChunk).toBeGreaterThanOrEqual(MIN_CHUNK_ROWS);
      expect(p.chunks * p.rowsPerChunk).toBeGreaterThanOrEqual(4096);
      expect((p.chunks - 1) * p.rowsPerChunk).toBeLessThan(4096);
    }
    expect(PART_BLOCKS_PER_SM).toBeGreaterThanOrEqual(4);
  });

  it("falls back to scalar loads for odd widths and misaligned x, and handles tiny shapes", () => {
    const [o, i] = col(5000, 33);
    expect(planReduceCols(o, i, A, 132)).toMatchObject({ vec: false, colBlocks: 2 });
    const [o2, i2] = col(4096, 8192);
    expect(planReduceCols(o2, i2, A + 2n, 132)?.vec).toBe(false);
    const [o3, i3] = col(3, 5);
    expect(planReduceCols(o3, i3, A, 132)).toEqual({ rows: 3, cols: 5, ld: 5, vec: false, colBlocks: 1, chunks: 1, rowsPerChunk: 3 });
  });

  it("declines layouts it does not handle", () => {
    // Reduced dim innermost (row sums), and two kept dims.
    expect(planReduceCols(coalesce([5], [[7]]), coalesce([7], [[1]]), A, 132)).toBeNull();
    expect(planReduceCols(coalesce([4, 5], [[10, 1]]), coalesce([3], [[40]]), A, 132)).toBeNull();
  });

  it("uses the block shape reduce.cu is compiled with", () => {
    const src = readFileSync(resolve(__dirname, "..", "kernels", "reduce.cu"), "utf8");
    expect(src).toContain(`#define PART_WARPS ${PART_WARPS}`);
    const common = readFileSync(resolve(__dirname, "..", "kernels", "common.cuh"), "utf8");
    expect(common).toContain("#define VEC 8");
  });
});
