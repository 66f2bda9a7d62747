/**
 * GPU vs CPU for the data-movement, elementwise and reduction ops of the Backend contract, on fresh
 * random inputs, in float32 (1e-5) and bfloat16 (1e-2), including strided, broadcast and offset views.
 */
import type { BinaryOp, DType, ReduceOp, UnaryOp } from "@fulgur/tensor";
import { describe, expect, it } from "vitest";
import { NO_GPU, cpu, expectClose, gpu, hasGpu, mapPair, outPair, pair, randPair, transpose2, values } from "./harness";

const DTYPES: DType[] = ["float32", "bfloat16"];
const UNARY: UnaryOp[] = ["neg", "exp", "log", "sqrt", "rsqrt", "tanh", "gelu", "relu", "abs", "sigmoid", "reciprocal", "square", "add_scalar", "mul_scalar", "pow_scalar", "rsub_scalar"];
const BINARY: BinaryOp[] = ["add", "sub", "mul", "div", "maximum", "minimum", "pow", "gelu_backward", "relu_backward", "eq", "ne", "lt", "le", "gt", "ge"];

describe.skipIf(!hasGpu)("elementwise and reduce on CUDA", () => {
  it("addMany: each destination gets exactly the sum binary add makes (float32, one pair over two chunks, an offset view)", () => {
    const shapes = [[2048], [70000], [3, 7]];
    // The last destination is a view at an offset into a larger buffer (a gradient inside a flat one).
    const big = randPair([40], "float32", 40);
    const inside = mapPair(big, (v) => ({ ...v, shape: [3, 7], strides: [7, 1], offset: 5 }));
    const dsts = [randPair(shapes[0], "float32", 20), randPair(shapes[1], "float32", 21), inside];
    const srcs = shapes.map((s, i) => randPair(s, "float32", 30 + i));
    const viaBinary = shapes.map((s) => outPair(s, "float32"));
    dsts.forEach((d, i) => gpu().binary("add", d.g, srcs[i].g, viaBinary[i].g));
    gpu().addMany!(
      dsts.map((d) => d.g),
      srcs.map((x) => x.g),
    );
    dsts.forEach((d, i) => expect([...values(d.g, gpu())]).toEqual([...values(viaBinary[i].g, gpu())]));
    // Outside the view nothing moved.
    const all = [...values(big.g, gpu())];
    const before = [...values(big.c, cpu())];
    expect(all.slice(0, 5)).toEqual(before.slice(0, 5));
    expect(all.slice(26)).toEqual(before.slice(26));
  });

  for (const dt of DTYPES) {
    it(`copy with cast, transposed source and strided destination (${dt})`, () => {
      const src = randPair([6, 5], "float32", 1);
      const dst = outPair([5, 6], dt);
      cpu().copy(transpose2(src.c), dst.c);
      gpu().copy(transpose2(src.g), dst.g);
      expectClose(dst, "copy transposed");
      const big = outPair([4, 10], dt);
      const into = mapPair(big, (v) => ({ ...v, shape: [4, 5], strides: [10, 2], offset: 1 }));
      const s2 = randPair([5], dt, 2);
      cpu().copy(s2.c, into.c);
      gpu().copy(s2.g, into.g);
      expectClose(big, "broadcast copy into strided view");
    });

    it(`fill (${dt})`, () => {
      const p = outPair([3, 7], dt);
      cpu().fill(p.c, -2.5);
      gpu().fill(p.g, -2.5);
      expectClose(p, "fill");
      cpu().fill(p.c, 0);
      gpu().fill(p.g, 0);
      expect([...values(p.g, gpu())]).toEqual(new Array(21).fill(0));
    });

    for (const op of UNARY) {
      it(`unary ${op} (${dt})`, () => {
        const positive = ["log", "sqrt", "rsqrt", "reciprocal", "pow_scalar"].includes(op);
        const x = randPair([7, 9], dt, 3, positive ? "positive" : "normal");
        const o = outPair([7, 9], dt);
        const scalar = op === "pow_scalar" ? 2.5 : 0.75;
        cpu().unary(op, x.c, o.c, scalar);
        gpu().unary(op, x.g, o.g, scalar);
        expectClose(o, op);
      });
    }

    for (const op of BINARY) {
      it(`binary ${op} with broadcasting (${dt})`, () => {
        const a = randPair([4, 1, 6], dt, 4, op === "pow" ? "positive" : "normal");
        const b = randPair([3, 6], dt, 5);
        const o = outPair([4, 3, 6], dt);
        // The contract hands inputs already expanded to the output shape (stride 0).
        const ea = mapPair(a, (v) => ({ ...v, shape: [4, 3, 6], strides: [6, 0, 1] }));
        const eb = mapPair(b, (v) => ({ ...v, shape: [4, 3, 6], strides: [0, 6, 1] }));
        cpu().binary(op, ea.c, eb.c, o.c);
        gpu().binary(op, ea.g, eb.g, o.g);
        expectClose(o, op);
      });
    }

    it(`where (${dt})`, () => {
      const c = pair([20], "float32", Float64Array.from({ length: 20 }, (_, i) => (i % 3 === 0 ? 0 : 1)));
      const a = randPair([20], dt, 6);
      const b = randPair([20], dt, 7);
      const o = outPair([20], dt);
      cpu().where(c.c, a.c, b.c, o.c);
      gpu().where(c.g, a.g, b.g, o.g);
      expectClose(o, "where", 0);
    });

    for (const [op, outShape] of [
      ["sum", [3, 1, 5]],
      ["sum", [1, 4, 1]],
      ["sum", [1, 4, 5]],
      ["max", [3, 4, 1]],
      ["min", [1, 1, 1]],
    ] as [ReduceOp, number[]][]) {
      it(`reduce ${op} to [${outShape}] (${dt})`, () => {
        const x = randPair([3, 4, 5], dt, 8);
        const o = outPair(outShape, dt);
        cpu().reduce(op, x.c, o.c);
        gpu().reduce(op, x.g, o.g);
        expectClose(o, `${op} [${outShape}]`);
      });
    }

    it(`reduce sum of a bias gradient [512, 384] -> [1, 384] (column kernel) and of a transposed view (${dt})`, () => {
      const x = randPair([512, 384], dt, 9);
      const o = outPair([1, 384], dt);
      cpu().reduce("sum", x.c, o.c);
      gpu().reduce("sum", x.g, o.g);
      expectClose(o, "bias grad sum");
      const o2 = outPair([384, 1], dt);
      cpu().reduce("sum", transpose2(x.c), o2.c);
      gpu().reduce("sum", transpose2(x.g), o2.g);
      expectClose(o2, "transposed row sums");
    });

    it(`argmax over one dim, first index on ties (${dt})`, () => {
      const data = Float64Array.from({ length: 24 }, (_, i) => [3, 1, 3, 0][i % 4] + Math.floor(i / 8));
      const x = pair([6, 4], dt, data);
      const o = { c: cpu().alloc("int32", 6), g: gpu().alloc("int32", 6) };
      const ov = mapPair({ c: { storage: o.c, shape: [6, 1], strides: [1, 1], offset: 0 }, g: { storage: o.g, shape: [6, 1], strides: [1, 1], offset: 0 } }, (v) => v);
      cpu().reduce("argmax", x.c, ov.c);
      gpu().reduce("argmax", x.g, ov.g);
      expect([...values(ov.g, gpu())]).toEqual([...values(ov.c, cpu())]);
      expect([...values(ov.g, gpu())]).toEqual([0, 0, 0, 0, 0, 0]);
    });
  }

  it("float64 and int32 elementwise stay exact", () => {
    const a = pair([5], "int32", Float64Array.from([1, -7, 2 ** 30, 12, 0]));
    const b = pair([5], "int32", Float64Array.from([3, 2, 2 ** 30, -5, 9]));
    const o = outPair([5], "int32");
    cpu().binary("add", a.c, b.c, o.c);
    gpu().binary("add", a.g, b.g, o.g);
    expect([...values(o.g, gpu())]).toEqual([...values(o.c, cpu())]);
    const x = randPair([33], "float64", 10);
    const y = outPair([33], "float64");
    cpu().unary("tanh", x.c, y.c);
    gpu().unary("tanh", x.g, y.g);
    expectClose(y, "tanh f64", 1e-12);
  });
});

if (!hasGpu) describe("elementwise and reduce on CUDA", () => it.skip(NO_GPU, () => {}));
