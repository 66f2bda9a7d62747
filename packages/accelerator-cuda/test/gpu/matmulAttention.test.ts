/**
 * GPU vs CPU for the matrix product through cuBLASLt (plain, batched, transposed operand, shared
 * weight, bias and GELU epilogues, beta accumulation, bf16 with fp32 output) and for flash attention
 * forward and backward (causal and not, head dims 16/64/128, Tq != Tk, Dv != D, a [B, T, H, D] view
 * transposed to [B, H, T, D] as GPT builds it), and the tensor-core attention of attention_mma.cu
 * (bf16 and f16, head dims 64 and 128, causal and not, T a multiple of 64 and not, a misaligned
 * view that must be staged) at 16-bit tolerance.
 */
import type { DType, MatmulOptions, View } from "@fulgur/tensor";
import { describe, expect, it } from "vitest";
import { NO_GPU, cpu, expectClose, gpu, hasGpu, mapPair, outPair, randPair, transpose2, values } from "./harness";

const DTYPES: DType[] = ["float32", "bfloat16"];

describe.skipIf(!hasGpu)("matmul on CUDA (cuBLASLt)", () => {
  for (const dt of DTYPES) {
    const cases: { name: string; a: number[]; b: number[]; out: number[]; tb?: boolean; opts?: (p: { c: View | undefined; g: View | undefined }) => MatmulOptions }[] = [
      { name: "2-D", a: [37, 64], b: [64, 48], out: [37, 48] },
      { name: "batched", a: [3, 17, 32], b: [3, 32, 24], out: [3, 17, 24] },
      { name: "shared weight", a: [2, 9, 32], b: [32, 40], out: [2, 9, 40] },
      { name: "transposed weight (x @ W^T)", a: [21, 64], b: [48, 64], out: [21, 48], tb: true },
    ];
    for (const c of cases) {
      it(`${c.name} (${dt})`, () => {
        const a = randPair(c.a, dt, 101);
        let b = randPair(c.b, dt, 102);
        if (c.tb) b = mapPair(b, transpose2);
        const o = outPair(c.out, dt);
        cpu().matmul(a.c, b.c, o.c);
        gpu().matmul(a.g, b.g, o.g);
        expectClose(o, c.name, dt === "float32" ? 1e-5 : 1e-2);
      });
    }

    for (const gelu of [false, true]) {
      it(`bias${gelu ? " + GELU" : ""} epilogue, alpha and beta accumulation (${dt})`, () => {
        const a = randPair([33, 64], dt, 103);
        const b = mapPair(randPair([40, 64], dt, 104), transpose2);
        const bias = randPair([40], dt, 105);
        const o = outPair([33, 40], dt, 106);
        cpu().matmul(a.c, b.c, o.c, { bias: bias.c, gelu });
        gpu().matmul(a.g, b.g, o.g, { bias: bias.g, gelu });
        expectClose(o, "epilogue");
        const acc = outPair([64, 40], dt, 107);
        // The weight-gradient shape: gW += x^T gy.
        cpu().matmul(transpose2(a.c), o.c, { ...acc.c, shape: [64, 40] }, { alpha: 0.5, beta: 1 });
        gpu().matmul(transpose2(a.g), o.g, { ...acc.g, shape: [64, 40] }, { alpha: 0.5, beta: 1 });
        expectClose(acc, "beta = 1 accumulation", dt === "float32" ? 1e-5 : 1e-2);
      });
    }
  }

  it("bf16 inputs with a float32 output", () => {
    const a = randPair([19, 32], "bfloat16", 108);
    const b = randPair([32, 11], "bfloat16", 109);
    const o = outPair([19, 11], "float32");
    cpu().matmul(a.c, b.c, o.c);
    gpu().matmul(a.g, b.g, o.g);
    expectClose(o, "bf16 -> f32", 1e-5);
  });
});

describe.skipIf(!hasGpu)("flash attention on CUDA", () => {
  const cases = [
    { name: "causal d64", B: 2, H: 3, Tq: 70, Tk: 70, D: 64, Dv: 64, causal: true },
    { name: "d128", B: 1, H: 2, Tq: 40, Tk: 40, D: 128, Dv: 128, causal: false },
    { name: "causal d128", B: 1, H: 2, Tq: 96, Tk: 96, D: 128, Dv: 128, causal: true },
    { name: "tiny head d16", B: 2, H: 4, Tq: 33, Tk: 33, D: 16, Dv: 16, causal: true },
    { name: "Tq != Tk, Dv != D", B: 1, H: 2, Tq: 20, Tk: 45, D: 64, Dv: 32, causal: false },
  ];
  for (const dt of ["float32", "bfloat16"] as DType[]) {
    for (const c of cases) {
      it(`${c.name} forward and backward (${dt})`, () => {
        const scale = 1 / Math.sqrt(c.D);
        // q as GPT makes it: a [B, T, H, D] tensor viewed as [B, H, T, D].
        const qraw = randPair([c.B, c.Tq, c.H, c.D], dt, 201);
        const q = mapPair(qraw, (v) => ({ ...v, shape: [c.B, c.H, c.Tq, c.D], strides: [v.strides[0], v.strides[2], v.strides[1], 1] }));
        const k = randPair([c.B, c.H, c.Tk, c.D], dt, 202);
        const v = randPair([c.B, c.H, c.Tk, c.Dv], dt, 203);
        const out = outPair([c.B, c.H, c.Tq, c.Dv], dt);
        const lse = outPair([c.B, c.H, c.Tq], "float32");
        cpu().attention(q.c, k.c, v.c, out.c, lse.c, c.causal, scale);
        gpu().attention(q.g, k.g, v.g, out.g, lse.g, c.causal, scale);
        expectClose(out, `${c.name} out`);
        expectClose(lse, `${c.name} lse`, 1e-5);
        const gout = randPair([c.B, c.H, c.Tq, c.Dv], dt, 204);
        const gq = outPair([c.B, c.H, c.Tq, c.D], dt);
        const gk = outPair([c.B, c.H, c.Tk, c.D], dt);
        const gv = outPair([c.B, c.H, c.Tk, c.Dv], dt);
        cpu().attentionBackward(q.c, k.c, v.c, out.c, lse.c, gout.c, gq.c, gk.c, gv.c, c.causal, scale);
        gpu().attentionBackward(q.g, k.g, v.g, out.g, lse.g, gout.g, gq.g, gk.g, gv.g, c.causal, scale);
        const tol = dt === "float32" ? 1e-5 : 1e-2;
        expectClose(gq, `${c.name} dq`, tol);
        expectClose(gk, `${c.name} dk`, tol);
        expectClose(gv, `${c.name} dv`, tol);
      });
    }
  }
});

// Every case here satisfies attentionPath's "mma" conditions (checked without a GPU in
// test/layout.test.ts): 16-bit dtype, D 64 or 128, Tq == Tk.
describe.skipIf(!hasGpu)("tensor-core flash attention on CUDA (attention_mma.cu)", () => {
  const cases = [
    { name: "d64 causal T128", B: 2, H: 2, T: 128, D: 64, causal: true, gptView: false },
    { name: "d64 full T100 (tail)", B: 1, H: 3, T: 100, D: 64, causal: false, gptView: true },
    { name: "d128 causal T200 (tail)", B: 2, H: 2, T: 200, D: 128, causal: true, gptView: true },
    { name: "d128 full T64", B: 1, H: 2, T: 64, D: 128, causal: false, gptView: false },
    { name: "d64 causal T1", B: 1, H: 1, T: 1, D: 64, causal: true, gptView: false },
  ];
  for (const dt of ["bfloat16", "float16"] as DType[]) {
    for (const c of cases) {
      it(`${c.name} forward and backward (${dt})`, () => {
        const scale = 1 / Math.sqrt(c.D);
        const shape = [c.B, c.H, c.T, c.D];
        const q = c.gptView
          ? mapPair(randPair([c.B, c.T, c.H, c.D], dt, 301), (v) => ({ ...v, shape, strides: [v.strides[0], v.strides[2], v.strides[1], 1] }))
          : randPair(shape, dt, 301);
        const k = randPair(shape, dt, 302);
        const v = randPair(shape, dt, 303);
        const out = outPair(shape, dt);
        const lse = outPair([c.B, c.H, c.T], "float32");
        cpu().attention(q.c, k.c, v.c, out.c, lse.c, c.causal, scale);
        gpu().attention(q.g, k.g, v.g, out.g, lse.g, c.causal, scale);
        expectClose(out, `${c.name} out`, 1e-2);
        expectClose(lse, `${c.name} lse`, 1e-5);
        const gout = randPair(shape, dt, 304);
        const gq = outPair(shape, dt);
        const gk = outPair(shape, dt);
        const gv = outPair(shape, dt);
        cpu().attentionBackward(q.c, k.c, v.c, out.c, lse.c, gout.c, gq.c, gk.c, gv.c, c.causal, scale);
        gpu().attentionBackward(q.g, k.g, v.g, out.g, lse.g, gout.g, gq.g, gk.g, gv.g, c.causal, scale);
        if (c.T === 1) {
          // One key: the softmax is constant, so dq and dk are exactly zero and a relative error
          // against a zero reference is meaningless; both sides must be zero up to rounding.
          for (const [p, n] of [[gq, "dq"], [gk, "dk"]] as const) {
            for (const side of [values(p.c, cpu()), values(p.g, gpu())]) {
              expect(Math.max(...side.map(Math.abs)), `${c.name} ${n}`).toBeLessThan(1e-4);
            }
          }
        } else {
          expectClose(gq, `${c.name} dq`, 1e-2);
          expectClose(gk, `${c.name} dk`, 1e-2);
        }
        expectClose(gv, `${c.name} dv`, 1e-2);
      });
    }
  }

  it("stages a view whose offset breaks 16-byte alignment (bfloat16)", () => {
    const [B, H, T, D] = [1, 2, 70, 64];
    const n = B * H * T * D;
    // Each operand starts 1 element into a larger buffer: 2-byte aligned, so it is copied first.
    const shifted = (seed: number) =>
      mapPair(randPair([n + 1], "bfloat16", seed), (v) => ({ ...v, shape: [B, H, T, D], strides: [H * T * D, T * D, D, 1], offset: 1 }));
    const q = shifted(311);
    const k = shifted(312);
    const v = shifted(313);
    const out = mapPair(outPair([n + 1], "bfloat16"), (x) => ({ ...x, shape: [B, H, T, D], strides: [H * T * D, T * D, D, 1], offset: 1 }));
    const lse = outPair([B, H, T], "float32");
    cpu().attention(q.c, k.c, v.c, out.c, lse.c, true, 0.125);
    gpu().attention(q.g, k.g, v.g, out.g, lse.g, true, 0.125);
    expectClose(out, "misaligned out", 1e-2);
    expectClose(lse, "misaligned lse", 1e-5);
  });
});

if (!hasGpu) {
  describe("matmul on CUDA (cuBLASLt)", () => it.skip(NO_GPU, () => {}));
  describe("flash attention on CUDA", () => it.skip(NO_GPU, () => {}));
  describe("tensor-core flash attention on CUDA (attention_mma.cu)", () => it.skip(NO_GPU, () => {}));
}
