/**
 * GPU vs CPU for the elementwise fast paths (flat contiguous kernels with 16-byte vectors and scalar
 * tails, the row-vector broadcast, the tiled transpose) and the two-stage column reduction: odd
 * lengths, views offset by one element (misaligned: scalar path), every dtype pair of cast, and the
 * bias-gradient shapes. Tolerances as in harness.ts; casts and selections must match exactly.
 */
import type { BinaryOp, DType, UnaryOp, View } from "@fulgur/tensor";
import { describe, expect, it } from "vitest";
import { NO_GPU, cpu, expectClose, gpu, hasGpu, mapPair, outPair, pair, randPair, transpose2, values } from "./harness";

const ALL: DType[] = ["float32", "float64", "bfloat16", "float16", "int32"];
const UNARY: UnaryOp[] = ["neg", "exp", "log", "sqrt", "rsqrt", "tanh", "gelu", "relu", "abs", "sigmoid", "reciprocal", "square", "add_scalar", "mul_scalar", "pow_scalar", "rsub_scalar"];
const BINARY: BinaryOp[] = ["add", "sub", "mul", "div", "maximum", "minimum", "pow", "gelu_backward", "relu_backward", "eq", "ne", "lt", "le", "gt", "ge"];
const LENGTHS = [1024, 1001, 7];

/** A [n] view one element into a [n + 1] buffer: 2, 4 or 8 bytes past a 16-byte boundary. */
function shifted(n: number, dtype: DType, seed: number, kind?: "positive") {
  const p = randPair([n + 1], dtype, seed, kind);
  return mapPair(p, (v) => ({ ...v, shape: [n], strides: [1], offset: 1 }));
}

function exact(o: { c: View; g: View }, label: string): void {
  expect([...values(o.g, gpu())], label).toEqual([...values(o.c, cpu())]);
}

describe.skipIf(!hasGpu)("elementwise fast paths and two-stage reduce_cols on CUDA", () => {
  it("casts every dtype pair, contiguous (vector + tail) and misaligned", () => {
    for (const sd of ALL) {
      for (const dd of ALL) {
        for (const n of LENGTHS) {
          const kind = sd === "int32" || dd === "int32" ? { low: -50000, high: 50000 } : undefined;
          const src = randPair([n], sd, 11, kind);
          const dst = outPair([n], dd);
          cpu().copy(src.c, dst.c);
          gpu().copy(src.g, dst.g);
          exact(dst, `cast ${sd} -> ${dd} [${n}]`);
          const s2 = shifted(n, sd, 12);
          const d2 = outPair([n], dd);
          cpu().copy(s2.c, d2.c);
          gpu().copy(s2.g, d2.g);
          exact(d2, `misaligned cast ${sd} -> ${dd} [${n}]`);
        }
      }
    }
  });

  for (const dt of ["float32", "bfloat16"] as DType[]) {
    it(`fill, contiguous with a tail and misaligned (${dt})`, () => {
      for (const n of LENGTHS) {
        const p = outPair([n], dt);
        cpu().fill(p.c, 1.375);
        gpu().fill(p.g, 1.375);
        exact(p, `fill [${n}]`);
        const big = outPair([n + 1], dt);
        const view = mapPair(big, (v) => ({ ...v, shape: [n], strides: [1], offset: 1 }));
        cpu().fill(view.c, -3);
        gpu().fill(view.g, -3);
        exact(big, `misaligned fill [${n}]`);
      }
    });

    it(`unary ops on the flat path, tails and misaligned (${dt})`, () => {
      for (const op of UNARY) {
        const positive = ["log", "sqrt", "rsqrt", "reciprocal", "pow_scalar"].includes(op) ? "positive" : undefined;
        const scalar = op === "pow_scalar" ? 2.5 : 0.75;
        for (const n of LENGTHS) {
          const x = randPair([n], dt, 13, positive);
          const o = outPair([n], dt);
          cpu().unary(op, x.c, o.c, scalar);
          gpu().unary(op, x.g, o.g, scalar);
          expectClose(o, `${op} [${n}]`);
          const xs = shifted(n, dt, 14, positive);
          const os = outPair([n], dt);
          cpu().unary(op, xs.c, os.c, scalar);
          gpu().unary(op, xs.g, os.g, scalar);
          expectClose(os, `misaligned ${op} [${n}]`);
        }
      }
    });

    it(`binary ops on the flat path, tails, misaligned and accumulate-in-place (${dt})`, () => {
      for (const op of BINARY) {
        for (const n of LENGTHS) {
          const a = randPair([n], dt, 15, op === "pow" ? "positive" : undefined);
          const b = randPair([n], dt, 16);
          const o = outPair([n], dt);
          cpu().binary(op, a.c, b.c, o.c);
          gpu().binary(op, a.g, b.g, o.g);
          expectClose(o, `${op} [${n}]`);
          const bs = shifted(n, dt, 17);
          const o2 = outPair([n], dt);
          cpu().binary(op, a.c, bs.c, o2.c);
          gpu().binary(op, a.g, bs.g, o2.g);
          expectClose(o2, `misaligned ${op} [${n}]`);
        }
      }
      // a += b (gradient accumulation): output aliases the first input.
      const acc = randPair([4099], dt, 18);
      const g = randPair([4099], dt, 19);
      cpu().binary("add", acc.c, g.c, acc.c);
      gpu().binary("add", acc.g, g.g, acc.g);
      expectClose(acc, "a += b");
    });

    it(`binary with a row vector broadcast over rows, both sides (${dt})`, () => {
      for (const [R, C] of [[64, 256], [5, 33], [3, 8]]) {
        for (const op of ["add", "mul", "sub", "div"] as BinaryOp[]) {
          const full = randPair([R, C], dt, 20);
          const row = randPair([C], dt, 21, "positive");
          const er = mapPair(row, (v) => ({ ...v, shape: [R, C], strides: [0, 1] }));
          const o = outPair([R, C], dt);
          cpu().binary(op, full.c, er.c, o.c);
          gpu().binary(op, full.g, er.g, o.g);
          expectClose(o, `[${R}, ${C}] ${op} row`);
          const o2 = outPair([R, C], dt);
          cpu().binary(op, er.c, full.c, o2.c);
          gpu().binary(op, er.g, full.g, o2.g);
          expectClose(o2, `row ${op} [${R}, ${C}]`);
        }
      }
      // Misaligned row vector (scalar path of the same kernel).
      const full = randPair([16, 64], dt, 22);
      const row = shifted(64, dt, 23);
      const er = mapPair(row, (v) => ({ ...v, shape: [16, 64], strides: [0, 1] }));
      const o = outPair([16, 64], dt);
      cpu().binary("add", full.c, er.c, o.c);
      gpu().binary("add", full.g, er.g, o.g);
      expectClose(o, "misaligned row add");
    });

    it(`where on the flat path (${dt})`, () => {
      for (const n of LENGTHS) {
        const c = pair([n], "float32", Float64Array.from({ length: n }, (_, i) => (i % 3 === 0 ? 0 : 1)));
        const a = randPair([n], dt, 24);
        const b = randPair([n], dt, 25);
        const o = outPair([n], dt);
        cpu().where(c.c, a.c, b.c, o.c);
        gpu().where(c.g, a.g, b.g, o.g);
        exact(o, `where [${n}]`);
      }
    });
  }

  it("tiled transpose copies (2-D, batched, partial tiles, with and without cast)", () => {
    for (const [sd, dd] of [["float32", "float32"], ["float32", "bfloat16"], ["bfloat16", "float32"], ["float64", "float64"], ["int32", "int32"]] as [DType, DType][]) {
      for (const [R, C] of [[70, 33], [64, 128], [1, 40]]) {
        const src = randPair([C, R], sd, 26);
        const dst = outPair([R, C], dd);
        cpu().copy(transpose2(src.c), dst.c);
        gpu().copy(transpose2(src.g), dst.g);
        exact(dst, `transpose ${sd}->${dd} [${R}, ${C}]`);
        // Transposed destination, contiguous source.
        const s2 = randPair([R, C], sd, 27);
        const d2 = outPair([C, R], dd);
        cpu().copy(s2.c, transpose2(d2.c));
        gpu().copy(s2.g, transpose2(d2.g));
        exact(d2, `transpose into ${sd}->${dd} [${R}, ${C}]`);
      }
      const b = randPair([3, 40, 50], sd, 28);
      const d = outPair([3, 50, 40], dd);
      cpu().copy(transpose2(b.c), d.c);
      gpu().copy(transpose2(b.g), d.g);
      exact(d, `batched transpose ${sd}->${dd}`);
    }
  });

  for (const [shape, dt] of [
    [[4096, 8192], "bfloat16"],
    [[4096, 2048], "float32"],
    [[3, 5], "float32"],
    [[3, 5], "bfloat16"],
    [[5000, 33], "float32"],
    [[300, 64], "float64"],
    [[100, 24], "int32"],
  ] as [number[], DType][]) {
    it(`two-stage reduce_cols sum/max/min [${shape}] -> [1, ${shape[1]}] (${dt})`, () => {
      const kind = dt === "int32" ? { low: -1000, high: 1000 } : undefined;
      const x = randPair(shape, dt, 29, kind);
      for (const op of ["sum", "max", "min"] as const) {
        const o = outPair([1, shape[1]], dt);
        cpu().reduce(op, x.c, o.c);
        gpu().reduce(op, x.g, o.g);
        if (op === "sum") expectClose(o, `${op} [${shape}]`, dt === "float32" ? 1e-5 : undefined);
        else exact(o, `${op} [${shape}]`);
      }
      // Deterministic: a second run gives the same bits.
      const o1 = outPair([1, shape[1]], dt);
      const o2 = outPair([1, shape[1]], dt);
      gpu().reduce("sum", x.g, o1.g);
      gpu().reduce("sum", x.g, o2.g);
      expect([...values(o2.g, gpu())]).toEqual([...values(o1.g, gpu())]);
    });
  }

  it("two-stage reduce_cols from a misaligned view, and max/min with NaN", () => {
    const big = randPair([65, 64], "bfloat16", 30);
    const x = mapPair(big, (v) => ({ ...v, shape: [64, 64], strides: [64, 1], offset: 1 }));
    const o = outPair([1, 64], "bfloat16");
    cpu().reduce("sum", x.c, o.c);
    gpu().reduce("sum", x.g, o.g);
    expectClose(o, "misaligned column sum");
    for (const dt of ["float32", "bfloat16"] as DType[]) {
      const R = 300;
      const C = 40;
      const data = Float64Array.from({ length: R * C }, (_, i) => Math.sin(i));
      // NaN in column 3 (early row), column 17 (last row) and column 39 (middle).
      data[5 * C + 3] = NaN;
      data[(R - 1) * C + 17] = NaN;
      data[150 * C + 39] = NaN;
      const x2 = pair([R, C], dt, data);
      for (const op of ["max", "min", "sum"] as const) {
        const o2 = outPair([1, C], dt);
        cpu().reduce(op, x2.c, o2.c);
        gpu().reduce(op, x2.g, o2.g);
        const got = values(o2.g, gpu());
        const ref = values(o2.c, cpu());
        for (const c of [3, 17, 39]) expect(Number.isNaN(got[c]), `${op} column ${c} is NaN`).toBe(true);
        for (let c = 0; c < C; c++) {
          if (Number.isNaN(ref[c])) expect(Number.isNaN(got[c])).toBe(true);
          else if (op === "sum") expect(Math.abs(got[c] - ref[c])).toBeLessThanOrEqual((dt === "float32" ? 1e-5 : 1e-2) * Math.max(1, Math.abs(ref[c])));
          else expect(got[c]).toBe(ref[c]);
        }
      }
    }
  });
});

if (!hasGpu) describe("elementwise fast paths and two-stage reduce_cols on CUDA", () => it.skip(NO_GPU, () => {}));
