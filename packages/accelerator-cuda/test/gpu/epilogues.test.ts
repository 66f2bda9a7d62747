/**
 * The cuBLASLt epilogues the fused ops rely on, at shapes like the GPT's (rows a multiple of 128,
 * widths of 256+): BGRADB (a linear layer's weight gradient with its bias gradient), GELU_AUX_BIAS
 * (fc1 forward keeping the pre-activation) and DGELU_BGRAD (the GELU backward and fc1's bias
 * gradient in the product that makes them), each against the CPU backend on the same inputs, in
 * float32 and in bfloat16 with float32 gradients (bf16-mixed training).
 */
import { describe, it } from "vitest";
import { NO_GPU, cpu, expectClose, gpu, hasGpu, outPair, randPair, transpose2 } from "./harness";

const M = 256;
const K = 128;
const N = 384;

describe.skipIf(!hasGpu)("cuBLASLt fused epilogues", () => {
  for (const [ab, grad] of [["float32", "float32"], ["bfloat16", "float32"]] as const) {
    it(`weight gradient with the bias gradient in one product (BGRADB), ${ab} -> ${grad}`, () => {
      const g = randPair([M, N], ab, 201); // output gradient [rows, out]
      const x = randPair([M, K], ab, 202); // layer input [rows, in]
      const gw = outPair([N, K], grad, 203);
      const gb = outPair([N], grad, 204);
      cpu().matmul(transpose2(g.c), x.c, gw.c, { aRowSums: gb.c });
      gpu().matmul(transpose2(g.g), x.g, gw.g, { aRowSums: gb.g });
      expectClose(gw, "weight gradient", ab === "float32" ? 1e-5 : 1e-2);
      expectClose(gb, "bias gradient (row sums of g^T)", ab === "float32" ? 1e-5 : 1e-2);
    });

    it(`GELU forward keeping the pre-activation (GELU_AUX_BIAS), then GELU backward with the bias gradient (DGELU_BGRAD), ${ab}`, () => {
      const x = randPair([M, K], ab, 211);
      const w1 = randPair([N, K], ab, 212);
      const b1 = randPair([N], ab, 213);
      const h = outPair([M, N], ab, 214);
      const pre = outPair([M, N], ab, 215);
      cpu().matmul(x.c, transpose2(w1.c), h.c, { bias: b1.c, gelu: true, geluAux: pre.c });
      gpu().matmul(x.g, transpose2(w1.g), h.g, { bias: b1.g, gelu: true, geluAux: pre.g });
      expectClose(pre, "pre-activation");
      expectClose(h, "gelu output");
      // Backward: d(pre) = (g @ W2) * GELU'(pre), db1 = column sums of d(pre).
      const g = randPair([M, K], ab, 216);
      const w2 = randPair([K, N], ab, 217);
      const dpre = outPair([M, N], ab, 218);
      const db1 = outPair([N], grad, 219);
      // Both sides read their own pre-activation, so they compute from identical values.
      cpu().matmul(g.c, w2.c, dpre.c, { geluGradAux: pre.c, outColSums: db1.c });
      gpu().matmul(g.g, w2.g, dpre.g, { geluGradAux: pre.g, outColSums: db1.g });
      expectClose(dpre, "gelu backward", ab === "float32" ? 1e-5 : 2e-2);
      expectClose(db1, "bias gradient (column sums)", ab === "float32" ? 1e-5 : 2e-2);
    });
  }
});

if (!hasGpu) describe("cuBLASLt fused epilogues", () => it.skip(NO_GPU, () => {}));
