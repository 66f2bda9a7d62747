/** Elementwise kernels vs float64 references: unary, binary (broadcast, strided), where, copy/casts, fill. */
import { describe, expect, it } from "vitest";
import type { BinaryOp, UnaryOp, View } from "../src/backend";
import type { DType } from "../src/dtype";
import { CpuStorage } from "../src/cpu";
import { DTYPES, encodeElement, f32ToF16Bits } from "../src/dtype";
import {
  be,
  broadcastValues,
  empty,
  expandView,
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
const geluRef = (x: number) => 0.5 * x * (1 + Math.tanh(C * (x + 0.044715 * x ** 3)));

const UNARY: Record<UnaryOp, (x: number, s: number) => number> = {
  neg: (x) => -x,
  exp: (x) => Math.exp(x),
  log: (x) => Math.log(x),
  sqrt: (x) => Math.sqrt(x),
  rsqrt: (x) => 1 / Math.sqrt(x),
  tanh: (x) => Math.tanh(x),
  gelu: geluRef,
  relu: (x) => (x > 0 ? x : 0),
  abs: (x) => Math.abs(x),
  sigmoid: (x) => 1 / (1 + Math.exp(-x)),
  reciprocal: (x) => 1 / x,
  square: (x) => x * x,
  add_scalar: (x, s) => x + s,
  mul_scalar: (x, s) => x * s,
  pow_scalar: (x, s) => x ** s,
  rsub_scalar: (x, s) => s - x,
};

const BINARY: Record<BinaryOp, (a: number, b: number) => number> = {
  add: (a, b) => a + b,
  sub: (a, b) => a - b,
  mul: (a, b) => a * b,
  div: (a, b) => a / b,
  maximum: (a, b) => Math.max(a, b),
  minimum: (a, b) => Math.min(a, b),
  pow: (a, b) => a ** b,
  gelu_backward: (x, g) => {
    const t = Math.tanh(C * (x + 0.044715 * x ** 3));
    return g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * C * (1 + 3 * 0.044715 * x * x));
  },
  relu_backward: (x, g) => (x > 0 ? g : 0),
  eq: (a, b) => +(a === b),
  ne: (a, b) => +(a !== b),
  lt: (a, b) => +(a < b),
  le: (a, b) => +(a <= b),
  gt: (a, b) => +(a > b),
  ge: (a, b) => +(a >= b),
};

const POSITIVE = new Set(["log", "sqrt", "rsqrt", "pow_scalar", "pow"]);
const LAYOUTS = {
  contiguous: makeView,
  transposed: transposedView,
  padded: paddedView,
} as const;

describe("cpu unary", () => {
  const shape = [3, 4, 5];
  for (const [op, ref] of Object.entries(UNARY) as [UnaryOp, (x: number, s: number) => number][]) {
    it(`${op} on strided float32/float64 and bfloat16`, () => {
      const r = rng(op.length * 7919 + op.charCodeAt(0));
      const x = randArray(r, 60, POSITIVE.has(op) ? 0.1 : -3, 3);
      const s = op === "pow_scalar" ? 1.7 : 0.75;
      for (const layout of Object.values(LAYOUTS)) {
        for (const dtype of ["float32", "float64"] as DType[]) {
          const xv = layout(x, shape, dtype);
          const out = empty(shape, dtype);
          be.unary(op, xv, out, s);
          const xr = values(xv);
          const tol = dtype === "float32" ? 3e-7 : 1e-14;
          expectClose(values(out), xr.map((v) => ref(v, s)), tol, tol);
        }
      }
      // 16-bit: computed wide and rounded once, so exactly the rounded reference.
      const xb = transposedView(x, shape, "bfloat16");
      const ob = empty(shape, "bfloat16");
      be.unary(op, xb, ob, s);
      const want = values(xb).map((v) => roundTo("bfloat16", ref(v, s)));
      expectClose(values(ob), want, 0, 0);
    });
  }

  it("gelu_backward is the derivative of gelu (finite differences, float64)", () => {
    const xs = randArray(rng(99), 50, -6, 6);
    const x = makeView(xs, [50], "float64");
    const g = makeView(new Float64Array(50).fill(1), [50], "float64");
    const out = empty([50], "float64");
    be.binary("gelu_backward", x, g, out);
    const h = 1e-5;
    const yp = empty([50], "float64");
    const ym = empty([50], "float64");
    be.unary("gelu", makeView(xs.map((v) => v + h), [50], "float64"), yp);
    be.unary("gelu", makeView(xs.map((v) => v - h), [50], "float64"), ym);
    const yP = values(yp);
    const yM = values(ym);
    expectClose(values(out), yP.map((v, i) => (v - yM[i]) / (2 * h)), 1e-8, 1e-9);
  });

  it("pow_scalar 2 equals square, relu passes NaN, int32 output truncates", () => {
    const x = makeView([1.5, -2.25, NaN, -0.5], [4]);
    const out = empty([4]);
    be.unary("relu", x, out);
    expect(Array.from(values(out))).toEqual([1.5, 0, NaN, 0]);
    const oi = empty([4], "int32");
    be.unary("mul_scalar", makeView([1.5, -2.7, 3.9, -0.2], [4]), oi, 2);
    expect(Array.from(values(oi))).toEqual([3, -5, 7, 0]);
  });

  it("handles negative strides (flips) and 0-d views", () => {
    const base = makeView([1, 2, 3, 4, 5, 6], [2, 3]);
    const flipped: View = { ...base, shape: [2, 3], strides: [-3, -1], offset: 5 };
    const out = empty([2, 3]);
    be.unary("neg", flipped, out);
    expect(Array.from(values(out))).toEqual([-6, -5, -4, -3, -2, -1]);
    const sum = empty([1, 1]);
    be.reduce("sum", flipped, sum);
    expect(values(sum)[0]).toBe(21);
    const scalar: View = { ...base, shape: [], strides: [], offset: 4 };
    const o0 = empty([]);
    be.unary("square", scalar, o0);
    expect(Array.from(values(o0))).toEqual([25]);
    const t = empty([3, 2]);
    be.copy({ ...flipped, shape: [3, 2], strides: [-1, -3] }, t);
    expect(Array.from(values(t))).toEqual([6, 3, 5, 2, 4, 1]);
  });

  it("runs in place", () => {
    const x = makeView([1, 2, 3], [3]);
    be.unary("mul_scalar", x, x, 3);
    expect(Array.from(values(x))).toEqual([3, 6, 9]);
  });
});

describe("cpu binary", () => {
  const target = [3, 4, 5];
  for (const [op, ref] of Object.entries(BINARY) as [BinaryOp, (a: number, b: number) => number][]) {
    it(`${op} with broadcast and non-contiguous inputs`, () => {
      const r = rng(op.length * 104729 + op.charCodeAt(1));
      const pos = POSITIVE.has(op);
      // Quantised values so comparisons see ties.
      const q = (v: Float64Array) => v.map((t) => Math.round(t * 4) / 4 + (pos ? 2.5 : 0));
      const aVals = q(randArray(r, 15));
      const bVals = q(randArray(r, 20));
      // a: [3,1,5] transposed then broadcast over dim 1; b: [4,5] padded, broadcast over dim 0.
      const a = expandView(transposedView(aVals, [3, 1, 5]), target);
      const b = expandView(paddedView(bVals, [4, 5]), target);
      const ar = broadcastValues(aVals, [3, 1, 5], target);
      const br = broadcastValues(bVals, [4, 5], target);
      const want = ar.map((v, i) => ref(v, br[i]));
      for (const dtype of ["float32", "float64"] as DType[]) {
        const out = empty(target, dtype);
        be.binary(op, a, b, out);
        const tol = dtype === "float32" ? 3e-7 : 1e-14;
        expectClose(values(out), want, tol, tol);
      }
      // bf16 inputs, int32 / bf16 output for comparisons and arithmetic respectively.
      const ab = expandView(makeView(aVals, [3, 1, 5], "bfloat16"), target);
      const bb = expandView(makeView(bVals, [4, 5], "bfloat16"), target);
      const isCmp = ["eq", "ne", "lt", "le", "gt", "ge"].includes(op);
      const outDtype: DType = isCmp ? "int32" : "bfloat16";
      const ob = empty(target, outDtype);
      be.binary(op, ab, bb, ob);
      const bfA = ar.map((v) => roundTo("bfloat16", v));
      const bfB = br.map((v) => roundTo("bfloat16", v));
      const wantB = bfA.map((v, i) => roundTo(outDtype, ref(v, bfB[i])));
      // One bf16 ulp of slack for gelu_backward: the kernel's sigmoid form and the tanh reference
      // may straddle a rounding boundary.
      expectClose(values(ob), wantB, op === "gelu_backward" ? 8e-3 : 0, 0);
    });
  }

  it("mixes dtypes: float32 + int32 -> float64", () => {
    const a = makeView([1.5, 2.5, -1], [3]);
    const b = makeView([1, -2, 7], [3], "int32");
    const out = empty([3], "float64");
    be.binary("add", a, b, out);
    expect(Array.from(values(out))).toEqual([2.5, 0.5, 6]);
  });

  it("accepts an unexpanded lower-rank operand", () => {
    const a = makeView([1, 2, 3, 4, 5, 6], [2, 3]);
    const b = makeView([10, 20, 30], [3]);
    const out = empty([2, 3]);
    be.binary("add", a, b, out);
    expect(Array.from(values(out))).toEqual([11, 22, 33, 14, 25, 36]);
  });
});

describe("cpu where", () => {
  it("selects with a broadcast condition and strided operands", () => {
    const r = rng(5);
    const target = [4, 6];
    const cond = expandView(makeView([1, 0, 0.5, 0, 0, -1], [1, 6], "float32"), target);
    const av = randArray(r, 24);
    const bv = randArray(r, 24);
    const out = empty(target, "float64");
    be.where(cond, transposedView(av, target, "float64"), paddedView(bv, target, "float64"), out);
    const cr = broadcastValues([1, 0, 0.5, 0, 0, -1], [1, 6], target);
    expectClose(values(out), av.map((v, i) => (cr[i] !== 0 ? v : bv[i])), 0, 0);
    const outb = empty(target, "bfloat16");
    be.where(expandView(makeView([1, 0, 1, 0, 1, 0], [6], "int32"), target), makeView(av, target, "bfloat16"), makeView(bv, target), outb);
    const want = av.map((v, i) => roundTo("bfloat16", i % 2 === 0 ? roundTo("bfloat16", v) : Math.fround(bv[i])));
    expectClose(values(outb), want, 0, 0);
  });
});

describe("cpu copy and casts", () => {
  it("casts between every pair of dtypes", () => {
    const r = rng(11);
    const vals = randArray(r, 40, -300, 300);
    vals[0] = 2.5;
    vals[1] = -2.5;
    vals[2] = 0.75;
    vals[3] = -0.75;
    for (const st of DTYPES) {
      const src = transposedView(vals, [5, 8], st);
      const srcVals = values(src);
      for (const dt of DTYPES) {
        const dst = empty([5, 8], dt);
        be.copy(src, dst);
        const want = srcVals.map((v) => roundTo(dt, v));
        expectClose(values(dst), want, 0, 0);
      }
    }
  });

  it("truncates toward zero into int32", () => {
    const dst = empty([4], "int32");
    be.copy(makeView([2.7, -2.7, 0.5, -0.5], [4], "float64"), dst);
    expect(Array.from(values(dst))).toEqual([2, -2, 0, 0]);
  });

  it("rounds bfloat16 to nearest even", () => {
    const cases: [number, number][] = [
      [1 + 2 ** -8, 1],
      [1 + 3 * 2 ** -8, 1 + 2 ** -6],
      [1 + 2 ** -8 + 2 ** -20, 1 + 2 ** -7],
      [1 + 2 ** -8 - 2 ** -20, 1],
      [-(1 + 3 * 2 ** -8), -(1 + 2 ** -6)],
      [3.4e38, Infinity],
      [Infinity, Infinity],
      [-Infinity, -Infinity],
      [0, 0],
      [1e-40, roundTo("bfloat16", 1e-40)],
    ];
    for (const from of ["float32", "float64"] as DType[]) {
      const src = makeView(cases.map((c) => c[0]), [cases.length], from);
      const dst = empty([cases.length], "bfloat16");
      be.copy(src, dst);
      expect(Array.from(values(dst))).toEqual(cases.map((c) => c[1]));
    }
    const nan = empty([1], "bfloat16");
    be.copy(makeView([NaN], [1]), nan);
    expect(Number.isNaN(values(nan)[0])).toBe(true);
    const bits = be.read(nan)[0];
    expect(bits & 0x7fc0).toBe(0x7fc0);
  });

  it("rounds float16 to nearest even with overflow and subnormals", () => {
    const cases: [number, number][] = [
      [1 + 2 ** -11, 1],
      [1 + 3 * 2 ** -11, 1 + 2 ** -9],
      [65504, 65504],
      [65519, 65504],
      [65520, Infinity],
      [2 ** -25, 0],
      [3 * 2 ** -25, 2 ** -23],
      [2 ** -24, 2 ** -24],
      [-0.5, -0.5],
    ];
    const dst = empty([cases.length], "float16");
    be.copy(makeView(cases.map((c) => c[0]), [cases.length], "float64"), dst);
    expect(Array.from(values(dst))).toEqual(cases.map((c) => c[1]));
    expect(Array.from(be.read(dst) as Uint16Array).slice(0, 2)).toEqual([f32ToF16Bits(1), f32ToF16Bits(1 + 2 ** -9)]);
  });

  it("copies into a strided destination from a broadcast source", () => {
    const src = makeView([1, 2, 3, 4, 5], [5]);
    const dst = transposedView(new Float64Array(15), [3, 5], "float64");
    be.copy(src, dst);
    expect(Array.from(values(dst))).toEqual([1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2, 3, 4, 5]);
    // Memory is column-major: each source value repeated along the (outer) dim of stride 1.
    expect(Array.from(be.read({ ...dst, shape: [15], strides: [1] }))).toEqual([1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5]);
  });

  it("copies transposes tile-wise (batched, both directions, odd sizes)", () => {
    const r = rng(12);
    const shape = [3, 37, 45];
    const v = randArray(r, 3 * 37 * 45);
    for (const dtype of ["float32", "bfloat16"] as DType[]) {
      // Source transposed in its last two dims, destination contiguous.
      const src = makeView(v, shape, dtype, [37 * 45, 1, 37]);
      const dst = empty(shape, dtype);
      be.copy(src, dst);
      expectClose(values(dst), values(src), 0, 0);
      // Destination transposed, source contiguous, with a cast.
      const dst2 = makeView(new Float64Array(v.length), shape, "float64", [37 * 45, 1, 37], 3);
      be.copy(dst, dst2);
      expectClose(values(dst2), values(src), 0, 0);
    }
  });

  it("copies large contiguous rows of raw bf16 bits unchanged", () => {
    const bits = new Uint16Array(300);
    for (let i = 0; i < 300; i++) bits[i] = (i * 2654435761) & 0xffff;
    const src: View = { storage: be.fromHost(bits, "bfloat16"), shape: [300], strides: [1], offset: 0 };
    const dst = empty([300], "bfloat16");
    be.copy(src, dst);
    expect(Array.from(be.read(dst))).toEqual(Array.from(bits));
  });
});

describe("cpu fill", () => {
  it("fills strided views in every dtype", () => {
    for (const dt of DTYPES) {
      const v = paddedView(new Float64Array(12), [3, 4], dt);
      be.fill(v, 1.3);
      const want = roundTo(dt, 1.3);
      expect(Array.from(values(v))).toEqual(new Array(12).fill(want));
      // Untouched gaps still hold the sentinel.
      const gap = (v.storage as CpuStorage).data[0];
      expect(gap).toBe(encodeElement(dt, dt === "int32" ? -999999 : NaN));
    }
  });
});
