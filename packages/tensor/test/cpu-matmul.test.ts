/** Batched matmul vs a naive float64 triple loop: layouts, batch broadcast, epilogues, accumulation. */
import { describe, expect, it } from "vitest";
import type { MatmulOptions, View } from "../src/backend";
import type { DType } from "../src/dtype";
import {
  be,
  empty,
  expectClose,
  makeView,
  paddedView,
  randArray,
  rng,
  roundTo,
  transposedView,
  values,
} from "./cpu-helpers";

const C = Math.sqrt(2 / Math.PI);
const gelu = (x: number) => 0.5 * x * (1 + Math.tanh(C * (x + 0.044715 * x ** 3)));

interface Case {
  B: number;
  M: number;
  K: number;
  N: number;
}

function refMatmul(
  { B, M, K, N }: Case,
  a: Float64Array,
  b: Float64Array,
  bBatched: boolean,
  opts: { bias?: Float64Array; gelu?: boolean; alpha?: number; beta?: number; out0?: Float64Array } = {},
): Float64Array {
  const out = new Float64Array(B * M * N);
  for (let bi = 0; bi < B; bi++)
    for (let i = 0; i < M; i++)
      for (let j = 0; j < N; j++) {
        let s = 0;
        for (let k = 0; k < K; k++) s += a[bi * M * K + i * K + k] * b[(bBatched ? bi * K * N : 0) + k * N + j];
        const o = bi * M * N + i * N + j;
        let v = (opts.alpha ?? 1) * s + (opts.beta ? opts.beta * opts.out0![o] : 0);
        if (opts.bias) v += opts.bias[j];
        if (opts.gelu) v = gelu(v);
        out[o] = v;
      }
  return out;
}

const LAYOUTS = { contiguous: makeView, transposed: transposedView, padded: paddedView } as const;

/** Transposes only the last two dims in memory (what a weight used as W^T looks like). */
function lastTwoTransposed(v: ArrayLike<number>, shape: number[], dtype: DType): View {
  const [, R, Cc] = shape;
  return makeView(v, shape, dtype, [R * Cc, 1, R]);
}

function check(cs: Case, dtype: DType, layoutA: string, layoutB: string, bBroadcast: boolean, seed: number): void {
  const r = rng(seed);
  const { B, M, K, N } = cs;
  const av = randArray(r, B * M * K, -1, 1);
  const bv = randArray(r, (bBroadcast ? 1 : B) * K * N, -1, 1);
  const mk = (name: string, v: Float64Array, shape: number[]) =>
    name === "lastTwo" ? lastTwoTransposed(v, shape, dtype) : LAYOUTS[name as keyof typeof LAYOUTS](v, shape, dtype);
  const a = mk(layoutA, av, [B, M, K]);
  let b = mk(layoutB, bv, [bBroadcast ? 1 : B, K, N]);
  if (bBroadcast) b = { ...b, shape: [B, K, N], strides: [0, b.strides[1], b.strides[2]] };
  const out = empty([B, M, N], dtype === "float64" ? "float64" : "float32");
  be.matmul(a, b, out);
  const want = refMatmul(cs, values(a), values(mk(layoutB, bv, [bBroadcast ? 1 : B, K, N])), !bBroadcast);
  const tol = out.storage.dtype === "float64" ? 1e-12 : 1e-6;
  expectClose(values(out), want, tol, tol * 10);
}

describe("cpu matmul", () => {
  const cases: Case[] = [
    { B: 1, M: 1, K: 1, N: 1 },
    { B: 2, M: 7, K: 13, N: 9 },
    { B: 3, M: 4, K: 8, N: 4 },
    { B: 1, M: 130, K: 300, N: 37 },
    { B: 1, M: 5, K: 3, N: 530 },
  ];
  for (const cs of cases) {
    it(`[${cs.B},${cs.M},${cs.K}] x [${cs.B},${cs.K},${cs.N}] over layouts and dtypes`, () => {
      let seed = cs.M * 1000 + cs.K * 10 + cs.N;
      for (const la of ["contiguous", "transposed", "lastTwo"])
        for (const lb of ["contiguous", "padded", "lastTwo"])
          for (const dtype of ["float32", "float64"] as DType[]) check(cs, dtype, la, lb, false, seed++);
    });
  }

  it("broadcasts b over the batch (stride 0)", () => {
    check({ B: 3, M: 6, K: 5, N: 7 }, "float32", "contiguous", "contiguous", true, 1);
    check({ B: 3, M: 6, K: 5, N: 7 }, "float64", "transposed", "lastTwo", true, 2);
  });

  it("widens bfloat16/float16 inputs and rounds the result on write", () => {
    for (const dtype of ["bfloat16", "float16"] as DType[]) {
      const r = rng(3);
      const cs = { B: 2, M: 5, K: 11, N: 6 };
      const av = randArray(r, 2 * 5 * 11, -1, 1);
      const bv = randArray(r, 2 * 11 * 6, -1, 1);
      const a = transposedView(av, [2, 5, 11], dtype);
      const b = makeView(bv, [2, 11, 6], dtype);
      const out = empty([2, 5, 6], dtype);
      be.matmul(a, b, out);
      const want = refMatmul(cs, values(a), values(b), true).map((v) => roundTo(dtype, v));
      expectClose(values(out), want, 0, 0);
    }
  });

  it("applies bias then gelu, and alpha/beta accumulation", () => {
    const r = rng(4);
    const cs = { B: 2, M: 9, K: 10, N: 11 };
    const av = randArray(r, 2 * 9 * 10);
    const bv = randArray(r, 2 * 10 * 11);
    const biasv = randArray(r, 11);
    const a = transposedView(av, [2, 9, 10], "float64");
    const b = paddedView(bv, [2, 10, 11], "float64");
    const bias = makeView(biasv, [11], "float64", [3], 2);
    const cases: [MatmulOptions, object][] = [
      [{ bias }, { bias: biasv }],
      [{ bias, gelu: true }, { bias: biasv, gelu: true }],
      [{ gelu: true }, { gelu: true }],
      [{ alpha: 0.5, beta: 1 }, { alpha: 0.5, beta: 1 }],
      [{ alpha: -2, beta: 0.25, bias }, { alpha: -2, beta: 0.25, bias: biasv }],
    ];
    for (const [opts, refOpts] of cases) {
      const out0 = randArray(r, 2 * 9 * 11);
      const out = makeView(out0, [2, 9, 11], "float64");
      be.matmul(a, b, out, opts);
      expectClose(values(out), refMatmul(cs, av, bv, true, { ...refOpts, out0 }), 1e-12, 1e-12);
    }
  });

  it("beta = 0 ignores NaN already in out", () => {
    const out = makeView(new Float64Array(4).fill(NaN), [1, 2, 2]);
    be.matmul(makeView([1, 2, 3, 4], [1, 2, 2]), makeView([1, 0, 0, 1], [1, 2, 2]), out, { alpha: 2, beta: 0 });
    expect(Array.from(values(out))).toEqual([2, 4, 6, 8]);
  });

  it("folds a batch of rows against a shared rank-2 b, with bias and beta", () => {
    const r = rng(8);
    const cs = { B: 3, M: 5, K: 6, N: 7 };
    const av = randArray(r, 3 * 5 * 6);
    const bv = randArray(r, 6 * 7);
    const out0 = randArray(r, 3 * 5 * 7);
    const biasv = randArray(r, 7);
    const out = makeView(out0, [3, 5, 7], "float64");
    be.matmul(makeView(av, [3, 5, 6], "float64"), transposedView(bv, [6, 7], "float64"), out, {
      bias: makeView(biasv, [7], "float64"),
      beta: 0.5,
    });
    const want = refMatmul(cs, av, bv, false, { bias: biasv, beta: 0.5, out0 });
    expectClose(values(out), want, 1e-12, 1e-12);
  });

  it("accepts rank-2 operands", () => {
    const out = empty([2, 2]);
    be.matmul(makeView([1, 2, 3, 4], [2, 2]), transposedView([5, 6, 7, 8], [2, 2]), out);
    expect(Array.from(values(out))).toEqual([19, 22, 43, 50]);
  });

  it("handles K = 0 as a zero product", () => {
    const out = makeView([9, 9], [1, 1, 2]);
    be.matmul(makeView([], [1, 1, 0]), makeView([], [1, 0, 2]), out, { bias: makeView([1, 2], [2]) });
    expect(Array.from(values(out))).toEqual([1, 2]);
  });
});
