/**
 * The fp32 AdamW in WebAssembly SIMD against PyTorch's formula in float64 (rounded to fp32 each
 * step): lengths that leave a tail of 1-3 lanes and span several chunks, offsets into larger
 * arrays, maximize and weight decay; elements outside the ranges are left alone.
 */
import { describe, expect, it } from "vitest";
import { adamwF32Simd } from "../src/cpu/adamwSimd";
import { f32ToBf16Bits } from "../src/dtype";

function constants(lr: number, beta1: number, beta2: number, eps: number, weightDecay: number, step: number, maximize: boolean) {
  const bc1 = 1 - beta1 ** step;
  const bc2 = 1 - beta2 ** step;
  return { beta1, beta2, c1: 1 - beta1, c2: 1 - beta2, stepSize: lr / bc1, invSqrtBc2: 1 / Math.sqrt(bc2), eps, decay: 1 - lr * weightDecay, sign: maximize ? -1 : 1 };
}

function random(n: number, seed: number, positive = false): Float32Array {
  let s = seed;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) % 2147483648;
    const u = s / 2147483648;
    out[i] = positive ? u * 1e-3 : u * 2 - 1;
  }
  return out;
}

describe("cpu adamw in WebAssembly SIMD", () => {
  for (const [n, offset, maximize] of [
    [1, 0, false],
    [7, 3, true],
    [8192, 1, false],
    [20_001, 5, false],
  ] as const) {
    it(`${n} elements from offset ${offset}${maximize ? ", maximize" : ""} follow PyTorch's formula`, () => {
      const total = n + offset + 4;
      const [p, g, m, v] = [random(total, 1), random(total, 2), random(total, 3), random(total, 4, true)];
      const ref = [p, m, v].map((a) => Float64Array.from(a));
      const untouched = [p[total - 1], m[total - 1], v[total - 1], p[0]];
      for (let step = 1; step <= 3; step++) {
        const h = { lr: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };
        expect(adamwF32Simd(p, offset, g, offset, m, offset, v, offset, n, constants(h.lr, h.beta1, h.beta2, h.eps, h.weightDecay, step, maximize))).toBe(true);
        const [rp, rm, rv] = ref;
        for (let i = offset; i < offset + n; i++) {
          const gi = maximize ? -g[i] : g[i];
          rm[i] = Math.fround(h.beta1 * rm[i] + (1 - h.beta1) * gi);
          rv[i] = Math.fround(h.beta2 * rv[i] + (1 - h.beta2) * gi * gi);
          const denom = Math.sqrt(rv[i]) / Math.sqrt(1 - h.beta2 ** step) + h.eps;
          rp[i] = Math.fround(rp[i] * (1 - h.lr * h.weightDecay) - ((h.lr / (1 - h.beta1 ** step)) * rm[i]) / denom);
        }
      }
      // Absolute: the values are of order 1 and fp32 keeps ~1e-7 of that; relative error means
      // little where m or p is a small difference of large terms (0.9 m + 0.1 g cancelling).
      for (const [k, got] of [p, m, v].entries()) {
        let worst = 0;
        for (let i = offset; i < offset + n; i++) worst = Math.max(worst, Math.abs(got[i] - ref[k][i]));
        expect(worst, ["p", "m", "v"][k]).toBeLessThan(1e-6);
      }
      expect([p[total - 1], m[total - 1], v[total - 1]]).toEqual(untouched.slice(0, 3));
      if (offset > 0) expect(p[0]).toBe(untouched[3]);
    });
  }

  it("writes the bf16 copy of the updated p in the same pass, rounded as f32ToBf16Bits rounds: ties to even, infinities, NaN and subnormals included", () => {
    const n = 8192 + 13;
    const offset = 2;
    const total = n + offset + 3;
    const [p, g, m, v] = [random(total, 5), random(total, 6), random(total, 7), random(total, 8, true)];
    // Values whose rounding is the question, kept as they are by the update (no gradient, no decay, lr 0).
    const edges = [1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -8), Infinity, -Infinity, NaN, 3.4e38, 1e-40, -0, 0, 65504.5];
    edges.forEach((x, i) => (p[offset + i] = x));
    const lp = new Uint16Array(total).fill(0xabcd);
    const k = constants(0, 0.9, 0.95, 1e-8, 0, 1, false);
    expect(adamwF32Simd(p, offset, g, offset, m, offset, v, offset, n, k, lp, offset + 1)).toBe(true);
    for (let i = 0; i < n; i++) expect(lp[offset + 1 + i], `element ${i} (${p[offset + i]})`).toBe(f32ToBf16Bits(p[offset + i]));
    // Ties: 1 + 2^-8 rounds down to even (0x3f80), 1 + 3·2^-8 up (0x3f82); a NaN stays quiet.
    expect([lp[offset + 1], lp[offset + 2], lp[offset + 6] & 0x7fc0]).toEqual([0x3f80, 0x3f82, 0x7fc0]);
    expect([lp[offset], lp[offset + n + 1]]).toEqual([0xabcd, 0xabcd]);
  });
});
