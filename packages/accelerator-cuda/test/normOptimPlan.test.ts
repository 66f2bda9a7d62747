/**
 * Which layer-norm kernel a launch gets (16-byte vector, scalar, or the generic float64 kernels) and
 * how the layer-norm backward and AdamW grids are sized, checked without a GPU; and that the
 * capacities and tile sizes the host assumes are the ones the kernels are compiled with.
 */
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import type { LayerNormRowOperand } from "../src/ops/nn";
import { LN_CAPACITY, LN_DTYPE_PAIRS, LN_MAX_THREADS, layerNormBackwardGrid, layerNormPlan, paramIsVectorisable } from "../src/ops/nn";
import { ADAMW_TILE, ADAMW_TILES_PER_CHUNK, CHUNK, adamwGrid } from "../src/ops/optim";

const kernels = resolve(__dirname, "..", "kernels");
const row = (dtype: LayerNormRowOperand["dtype"], cols: number, ptr = 0x7f0000000000n, rowStride = cols): LayerNormRowOperand => ({ dtype, ptr, rowStride });

describe("layer norm kernel selection", () => {
  it("takes the 16-byte kernels for aligned rows a multiple of 16 bytes wide", () => {
    expect(layerNormPlan("fwd", [row("bfloat16", 2048), row("bfloat16", 2048)], 2048)).toEqual({ kernel: "layernorm_fwd_bf16_bf16_vec", threads: 128, vec: true });
    expect(layerNormPlan("bwd", [row("bfloat16", 2048), row("bfloat16", 2048), row("bfloat16", 2048)], 2048)).toEqual({
      kernel: "layernorm_bwd_bf16_bf16_vec",
      threads: 256,
      vec: true,
    });
    expect(layerNormPlan("fwd", [row("float32", 8192), row("float32", 8192)], 8192)).toEqual({ kernel: "layernorm_fwd_f32_f32_vec", threads: 512, vec: true });
    expect(layerNormPlan("bwd", [row("float16", 8192), row("float16", 8192), row("float16", 8192)], 8192)).toEqual({
      kernel: "layernorm_bwd_f16_f16_vec",
      threads: 1024,
      vec: true,
    });
    // A short row still gets a whole warp.
    expect(layerNormPlan("fwd", [row("float32", 8), row("float32", 8)], 8)?.threads).toBe(32);
  });

  it("takes the mixed float32 / 16-bit kernels, 8 elements an access, at the same capacity in elements", () => {
    // fp32 residual stream into a bf16 matmul: V 8 (one bf16 word, two f32 words), 16 per thread.
    expect(layerNormPlan("fwd", [row("float32", 2048), row("bfloat16", 2048)], 2048)).toEqual({ kernel: "layernorm_fwd_f32_bf16_vec", threads: 128, vec: true });
    expect(layerNormPlan("fwd", [row("float32", 2048), row("float16", 2048)], 2048)).toEqual({ kernel: "layernorm_fwd_f32_f16_vec", threads: 128, vec: true });
    expect(layerNormPlan("fwd", [row("bfloat16", 8192), row("float32", 8192)], 8192)).toEqual({ kernel: "layernorm_fwd_bf16_f32_vec", threads: 512, vec: true });
    expect(layerNormPlan("fwd", [row("float16", 16384), row("float32", 16384)], 16384)).toEqual({ kernel: "layernorm_fwd_f16_f32_vec", threads: 1024, vec: true });
    // Its backward: bf16 gy, f32 x and gx: V 8, 8 per thread.
    expect(layerNormPlan("bwd", [row("bfloat16", 2048), row("float32", 2048), row("float32", 2048)], 2048)).toEqual({
      kernel: "layernorm_bwd_bf16_f32_vec",
      threads: 256,
      vec: true,
    });
    expect(layerNormPlan("bwd", [row("float16", 2048), row("float32", 2048), row("float32", 2048)], 2048)?.kernel).toBe("layernorm_bwd_f16_f32_vec");
    // The other way round: f32 gy beside 16-bit x and gx.
    expect(layerNormPlan("bwd", [row("float32", 8192), row("bfloat16", 8192), row("bfloat16", 8192)], 8192)).toEqual({
      kernel: "layernorm_bwd_f32_bf16_vec",
      threads: 1024,
      vec: true,
    });
    expect(layerNormPlan("bwd", [row("float32", 96), row("float16", 96), row("float16", 96)], 96)).toEqual({
      kernel: "layernorm_bwd_f32_f16_vec",
      threads: 32,
      vec: true,
    });
    // Too wide at 8 per thread, as for one dtype.
    expect(layerNormPlan("bwd", [row("bfloat16", 8200), row("float32", 8200), row("float32", 8200)], 8200)).toBeNull();
  });

  it("falls back to the scalar kernels for odd widths, misaligned rows and row strides", () => {
    expect(layerNormPlan("fwd", [row("bfloat16", 100), row("bfloat16", 100)], 100)).toEqual({ kernel: "layernorm_fwd_bf16_bf16_scalar", threads: 32, vec: false });
    expect(layerNormPlan("fwd", [row("float32", 4096), row("float32", 4096)], 4096)?.vec).toBe(true);
    // An offset view one element in: 2 bytes past a 16-byte boundary.
    const shifted = row("bfloat16", 64, 0x7f0000000002n, 72);
    expect(layerNormPlan("fwd", [shifted, row("bfloat16", 64)], 64)).toEqual({ kernel: "layernorm_fwd_bf16_bf16_scalar", threads: 32, vec: false });
    // Aligned base but a row stride of 68 elements (136 bytes): later rows are misaligned.
    expect(layerNormPlan("bwd", [row("bfloat16", 64, undefined, 68), row("bfloat16", 64), row("bfloat16", 64)], 64)?.vec).toBe(false);
    expect(layerNormPlan("bwd", [row("float32", 2050), row("float32", 2050), row("float32", 2050)], 2050)).toEqual({
      kernel: "layernorm_bwd_f32_f32_scalar",
      threads: 544,
      vec: false,
    });
  });

  it("falls back to scalar for a mixed pair when any operand, the float32 one included, breaks the 8-element access", () => {
    // 4 bytes past a 16-byte boundary: the f32 x of an f32 -> bf16 forward.
    expect(layerNormPlan("fwd", [row("float32", 2048, 0x7f0000000004n), row("bfloat16", 2048)], 2048)).toEqual({
      kernel: "layernorm_fwd_f32_bf16_scalar",
      threads: 256,
      vec: false,
    });
    // The f32 gx of a bf16-gy backward, one element in.
    expect(layerNormPlan("bwd", [row("bfloat16", 2048), row("float32", 2048), row("float32", 2048, 0x7f0000000004n)], 2048)).toEqual({
      kernel: "layernorm_bwd_bf16_f32_scalar",
      threads: 512,
      vec: false,
    });
    // f32 rows 2050 elements apart: 8200 bytes, not a multiple of 16.
    expect(layerNormPlan("fwd", [row("float32", 2048, undefined, 2050), row("bfloat16", 2048)], 2048)?.vec).toBe(false);
    // Strides are judged in each operand's own bytes: 2052 f32 (8208 bytes) and 2056 bf16 (4112 bytes) both fit...
    expect(layerNormPlan("fwd", [row("float32", 2048, undefined, 2052), row("bfloat16", 2048, undefined, 2056)], 2048)?.vec).toBe(true);
    // ...but 2052 bf16 (4104 bytes) does not.
    expect(layerNormPlan("fwd", [row("float32", 2048, undefined, 2052), row("bfloat16", 2048, undefined, 2052)], 2048)?.vec).toBe(false);
    // 2052 wide: a multiple of f32's 4 but not of the mix's 8.
    expect(layerNormPlan("fwd", [row("float32", 2052), row("float32", 2052)], 2052)?.vec).toBe(true);
    expect(layerNormPlan("fwd", [row("float32", 2052), row("bfloat16", 2052)], 2052)).toEqual({ kernel: "layernorm_fwd_f32_bf16_scalar", threads: 288, vec: false });
  });

  it("sends float64, int32, unlisted mixes, gx off x's dtype, empty rows and over-wide rows to the generic kernels", () => {
    expect(layerNormPlan("fwd", [row("float64", 64), row("float64", 64)], 64)).toBeNull();
    expect(layerNormPlan("fwd", [row("int32", 64), row("int32", 64)], 64)).toBeNull();
    expect(layerNormPlan("fwd", [row("float32", 64), row("float64", 64)], 64)).toBeNull();
    expect(layerNormPlan("fwd", [row("float64", 64), row("bfloat16", 64)], 64)).toBeNull();
    expect(layerNormPlan("fwd", [row("bfloat16", 64), row("float16", 64)], 64)).toBeNull();
    expect(layerNormPlan("bwd", [row("float16", 64), row("bfloat16", 64), row("bfloat16", 64)], 64)).toBeNull();
    // gx is stored in x's dtype by every fast kernel.
    expect(layerNormPlan("bwd", [row("bfloat16", 64), row("float32", 64), row("bfloat16", 64)], 64)).toBeNull();
    expect(layerNormPlan("bwd", [row("float32", 64), row("float32", 64), row("bfloat16", 64)], 64)).toBeNull();
    expect(layerNormPlan("fwd", [row("float32", 0), row("float32", 0)], 0)).toBeNull();
    expect(layerNormPlan("fwd", [row("float32", 0), row("bfloat16", 0)], 0)).toBeNull();
    const widest = (pass: "fwd" | "bwd", vec: boolean) => LN_MAX_THREADS * LN_CAPACITY[pass][vec ? "vec" : "scalar"];
    expect(widest("fwd", true)).toBe(16384);
    expect(layerNormPlan("fwd", [row("bfloat16", 16384), row("bfloat16", 16384)], 16384)?.threads).toBe(1024);
    expect(layerNormPlan("fwd", [row("bfloat16", 16392), row("bfloat16", 16392)], 16392)).toBeNull();
    expect(layerNormPlan("fwd", [row("float32", 16392), row("bfloat16", 16392)], 16392)).toBeNull();
    expect(layerNormPlan("bwd", [row("bfloat16", 8200), row("bfloat16", 8200), row("bfloat16", 8200)], 8200)).toBeNull();
    expect(layerNormPlan("fwd", [row("float32", 8193), row("float32", 8193)], 8193)).toBeNull();
  });

  it("reads a weight in 16-byte words only when it is unit-stride and aligned", () => {
    expect(paramIsVectorisable({ ptr: 0x1000n, stride: 1 })).toBe(true);
    expect(paramIsVectorisable({ ptr: 0x1004n, stride: 1 })).toBe(false);
    expect(paramIsVectorisable({ ptr: 0x1000n, stride: 2 })).toBe(false);
    expect(paramIsVectorisable(null)).toBe(false);
  });

  it("sizes the backward grid to one wave, never more blocks than rows", () => {
    expect(layerNormBackwardGrid(4096, 256, 132)).toBe(528);
    expect(layerNormBackwardGrid(100, 256, 132)).toBe(100);
    expect(layerNormBackwardGrid(100000, 1024, 132)).toBe(132);
    expect(layerNormBackwardGrid(100000, 32, 132)).toBe(132 * 32);
    expect(layerNormBackwardGrid(100000, 96, 132)).toBe(132 * 10);
  });

  it("matches the capacities, dtype pairs and vector widths layernorm.cu is compiled with", () => {
    const src = readFileSync(join(kernels, "layernorm.cu"), "utf8");
    const define = (name: string) => Number(new RegExp(`^#define ${name} (\\d+)$`, "m").exec(src)?.[1]);
    expect([define("LN_FWD_VEC"), define("LN_FWD_SCALAR")]).toEqual([LN_CAPACITY.fwd.vec, LN_CAPACITY.fwd.scalar]);
    expect([define("LN_BWD_VEC"), define("LN_BWD_SCALAR")]).toEqual([LN_CAPACITY.bwd.vec, LN_CAPACITY.bwd.scalar]);
    const variants = [...src.matchAll(/^LN_VARIANTS\((\w+), (\w+), DT_(\w+), DT_(\w+), (\d+)\)$/gm)];
    expect(variants.map(([, a, b]) => [a, b])).toEqual(LN_DTYPE_PAIRS);
    const itemsize: Record<string, number> = { F32: 4, BF16: 2, F16: 2 };
    const suffix: Record<string, string> = { F32: "f32", BF16: "bf16", F16: "f16" };
    for (const [, a, b, adt, bdt, width] of variants) {
      expect([suffix[adt], suffix[bdt]], `LN_VARIANTS(${a}, ${b})`).toEqual([a, b]);
      expect(Number(width), `LN_VARIANTS(${a}, ${b})`).toBe(16 / Math.min(itemsize[adt], itemsize[bdt]));
    }
    for (const [pass, variant] of [["fwd", "vec"], ["fwd", "scalar"], ["bwd", "vec"], ["bwd", "scalar"]]) {
      expect(src).toContain(`__launch_bounds__(1024) layernorm_${pass}_##A##_##B##_${variant}(`);
    }
  });

  it("names only kernels layernorm.cu defines, for every pair of row dtypes", () => {
    const src = readFileSync(join(kernels, "layernorm.cu"), "utf8");
    const defined = new Set<string>();
    for (const [, a, b] of src.matchAll(/^LN_VARIANTS\((\w+), (\w+),/gm)) {
      for (const pass of ["fwd", "bwd"]) for (const variant of ["vec", "scalar"]) defined.add(`layernorm_${pass}_${a}_${b}_${variant}`);
    }
    expect(defined.size).toBe(28);
    const dtypes: LayerNormRowOperand["dtype"][] = ["float32", "bfloat16", "float16", "float64", "int32"];
    let fast = 0;
    for (const a of dtypes) {
      for (const b of dtypes) {
        for (const cols of [2048, 100]) {
          const fwd = layerNormPlan("fwd", [row(a, cols), row(b, cols)], cols);
          const bwd = layerNormPlan("bwd", [row(a, cols), row(b, cols), row(b, cols)], cols);
          for (const plan of [fwd, bwd]) if (plan) expect(defined.has(plan.kernel), plan.kernel).toBe(true);
          expect(fwd === null, `${a} -> ${b}`).toBe(bwd === null);
          if (fwd) fast++;
        }
      }
    }
    expect(fast).toBe(2 * LN_DTYPE_PAIRS.length);
  });
});

describe("AdamW grid", () => {
  it("covers every tile with about four waves of blocks at most", () => {
    expect(ADAMW_TILES_PER_CHUNK * ADAMW_TILE).toBe(CHUNK);
    expect(adamwGrid(1, 132)).toBe(16);
    expect(adamwGrid(10, 132)).toBe(160);
    expect(adamwGrid(1526, 132)).toBe(132 * 16);
  });

  it("matches the tile size adamw.cu is compiled with", () => {
    const src = readFileSync(join(kernels, "adamw.cu"), "utf8");
    expect(Number(/^#define ADAMW_TILE (\d+)/m.exec(src)?.[1])).toBe(ADAMW_TILE);
    expect(Number(/^#define ADAMW_TILES_PER_CHUNK (\d+)/m.exec(src)?.[1])).toBe(ADAMW_TILES_PER_CHUNK);
  });
});
