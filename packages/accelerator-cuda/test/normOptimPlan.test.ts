/**
 * Which layer-norm kernel a launch gets (16-byte vector, scalar, or the generic float64 kernels) and
 * how the layer-norm backward and AdamW grids are sized, checked without a GPU; and that the
 * capacities and tile sizes the host assumes are the ones the kernels are compiled with.
 */
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import type { LayerNormRowOperand } from "../src/ops/nn";
import { LN_CAPACITY, LN_MAX_THREADS, layerNormBackwardGrid, layerNormPlan, paramIsVectorisable } from "../src/ops/nn";
import { ADAMW_TILE, ADAMW_TILES_PER_CHUNK, CHUNK, adamwGrid } from "../src/ops/optim";

const kernels = resolve(__dirname, "..", "kernels");
const row = (dtype: LayerNormRowOperand["dtype"], cols: number, ptr = 0x7f0000000000n, rowStride = cols): LayerNormRowOperand => ({ dtype, ptr, rowStride });

describe("layer norm kernel selection", () => {
  it("takes the 16-byte kernels for aligned rows a multiple of 16 bytes wide", () => {
    expect(layerNormPlan("fwd", [row("bfloat16", 2048), row("bfloat16", 2048)], 2048)).toEqual({ kernel: "layernorm_fwd_bf16_vec", threads: 128, vec: true });
    expect(layerNormPlan("bwd", [row("bfloat16", 2048), row("bfloat16", 2048), row("bfloat16", 2048)], 2048)).toEqual({
      kernel: "layernorm_bwd_bf16_vec",
      threads: 256,
      vec: true,
    });
    expect(layerNormPlan("fwd", [row("float32", 8192), row("float32", 8192)], 8192)).toEqual({ kernel: "layernorm_fwd_f32_vec", threads: 512, vec: true });
    expect(layerNormPlan("bwd", [row("float16", 8192), row("float16", 8192), row("float16", 8192)], 8192)).toEqual({
      kernel: "layernorm_bwd_f16_vec",
      threads: 1024,
      vec: true,
    });
    // A short row still gets a whole warp.
    expect(layerNormPlan("fwd", [row("float32", 8), row("float32", 8)], 8)?.threads).toBe(32);
  });

  it("falls back to the scalar kernels for odd widths, misaligned rows and row strides", () => {
    expect(layerNormPlan("fwd", [row("bfloat16", 100), row("bfloat16", 100)], 100)).toEqual({ kernel: "layernorm_fwd_bf16_scalar", threads: 32, vec: false });
    expect(layerNormPlan("fwd", [row("float32", 4096), row("float32", 4096)], 4096)?.vec).toBe(true);
    // An offset view one element in: 2 bytes past a 16-byte boundary.
    const shifted = row("bfloat16", 64, 0x7f0000000002n, 72);
    expect(layerNormPlan("fwd", [shifted, row("bfloat16", 64)], 64)).toEqual({ kernel: "layernorm_fwd_bf16_scalar", threads: 32, vec: false });
    // Aligned base but a row stride of 68 elements (136 bytes): later rows are misaligned.
    expect(layerNormPlan("bwd", [row("bfloat16", 64, undefined, 68), row("bfloat16", 64), row("bfloat16", 64)], 64)?.vec).toBe(false);
    expect(layerNormPlan("bwd", [row("float32", 2050), row("float32", 2050), row("float32", 2050)], 2050)).toEqual({
      kernel: "layernorm_bwd_f32_scalar",
      threads: 544,
      vec: false,
    });
  });

  it("sends float64, int32, mixed dtypes, empty rows and over-wide rows to the generic kernels", () => {
    expect(layerNormPlan("fwd", [row("float64", 64), row("float64", 64)], 64)).toBeNull();
    expect(layerNormPlan("fwd", [row("int32", 64), row("int32", 64)], 64)).toBeNull();
    expect(layerNormPlan("fwd", [row("bfloat16", 64), row("float32", 64)], 64)).toBeNull();
    expect(layerNormPlan("fwd", [row("float32", 0), row("float32", 0)], 0)).toBeNull();
    const widest = (pass: "fwd" | "bwd", vec: boolean) => LN_MAX_THREADS * LN_CAPACITY[pass][vec ? "vec" : "scalar"];
    expect(widest("fwd", true)).toBe(16384);
    expect(layerNormPlan("fwd", [row("bfloat16", 16384), row("bfloat16", 16384)], 16384)?.threads).toBe(1024);
    expect(layerNormPlan("fwd", [row("bfloat16", 16392), row("bfloat16", 16392)], 16392)).toBeNull();
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

  it("matches the capacities layernorm.cu is compiled with", () => {
    const src = readFileSync(join(kernels, "layernorm.cu"), "utf8");
    const variants = [...src.matchAll(/^LN_VARIANTS\((\w+)_(vec|scalar), DT_\w+, (\d+), (\d+), (\d+)\)/gm)];
    expect(variants.length).toBe(6);
    for (const [, name, kind, width, fwd, bwd] of variants) {
      const k = kind as "vec" | "scalar";
      expect([Number(fwd), Number(bwd)], `${name}_${kind}`).toEqual([LN_CAPACITY.fwd[k], LN_CAPACITY.bwd[k]]);
      expect(Number(width), `${name}_${kind}`).toBe(k === "scalar" ? 1 : name === "f32" ? 4 : 8);
    }
    expect(src).toMatch(/__launch_bounds__\(1024\) layernorm_fwd_##NAME/);
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
