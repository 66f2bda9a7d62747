// Forward values and gradients against PyTorch (torch 2.11, float64). The fixture was produced by
// scripts/fixtures/make_torch_fixtures.py, which draws and stores the inputs too.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import * as T from "../src";
import { relativeError } from "../src/testing";

const fixture = JSON.parse(readFileSync(new URL("./fixtures/torch_ops.json", import.meta.url), "utf8"));
const ops = fixture.ops;

type Arr = { shape: number[]; values: number[] };
const f64 = (a: Arr, grad = true): T.Tensor => T.tensor(a.values, { shape: a.shape, dtype: "float64", requiresGrad: grad });
const close = (t: T.Tensor | null, ref: Arr | number[], tol = 1e-10): void => {
  expect(t).not.toBeNull();
  const values = Array.isArray(ref) ? ref : ref.values;
  if (!Array.isArray(ref)) expect(t!.shape).toEqual(ref.shape);
  expect(relativeError(t!.toArray(), values)).toBeLessThan(tol);
};

describe("ops against PyTorch (float64)", () => {
  const unary: Record<string, (x: T.Tensor) => T.Tensor> = {
    exp: T.exp, tanh: T.tanh, sigmoid: T.sigmoid, relu: T.relu, gelu: T.gelu, log: T.log, sqrt: T.sqrt, rsqrt: T.rsqrt,
    softmax: (x) => T.softmax(x, -1), log_softmax: (x) => T.logSoftmax(x, -1), softmax_dim0: (x) => T.softmax(x, 0),
  };
  for (const [name, fn] of Object.entries(unary)) {
    it(name, () => {
      const c = ops[name];
      const x = f64(c.x);
      const y = fn(x);
      close(y, c.y);
      y.backward(f64(c.gy, false));
      close(x.grad, c.gx);
    });
  }

  for (const name of ["matmul", "bmm"]) {
    it(name, () => {
      const c = ops[name];
      const a = f64(c.a);
      const b = f64(c.b);
      const y = T.matmul(a, b);
      close(y, c.y);
      y.backward(f64(c.gy, false));
      close(a.grad, c.ga);
      close(b.grad, c.gb);
    });
  }

  it("linear", () => {
    const c = ops.linear;
    const [x, w, b] = [f64(c.x), f64(c.w), f64(c.b)];
    const y = T.linear(x, w, b);
    close(y, c.y);
    y.backward(f64(c.gy, false));
    close(x.grad, c.gx);
    close(w.grad, c.gw);
    close(b.grad, c.gb);
  });

  it("layer_norm", () => {
    const c = ops.layer_norm;
    const [x, w, b] = [f64(c.x), f64(c.w), f64(c.b)];
    const y = T.layerNorm(x, 6, w, b, c.eps);
    close(y, c.y);
    y.backward(f64(c.gy, false));
    close(x.grad, c.gx, 1e-9);
    close(w.grad, c.gw);
    close(b.grad, c.gb);
  });

  it("cross_entropy with ignore_index, mean and sum", () => {
    const c = ops.cross_entropy;
    const logits = f64(c.logits);
    const targets = T.tensor(c.targets, { dtype: "int32" });
    const loss = T.crossEntropy(logits, targets, { ignoreIndex: -100 });
    expect(loss.item()).toBeCloseTo(c.loss, 12);
    loss.backward();
    close(logits.grad, c.glogits);
    const s = T.crossEntropy(f64(ops.cross_entropy_sum.logits), targets, { reduction: "sum" });
    expect(s.item()).toBeCloseTo(ops.cross_entropy_sum.loss, 12);
  });

  it("embedding", () => {
    const c = ops.embedding;
    const w = f64(c.w);
    const ids = T.tensor(c.ids, { shape: c.ids_shape, dtype: "int32" });
    const y = T.embedding(ids, w);
    close(y, c.y);
    y.backward(f64(c.gy, false));
    close(w.grad, c.gw);
  });

  for (const name of ["sdpa_causal", "sdpa"]) {
    it(name, () => {
      const c = ops[name];
      const [q, k, v] = [f64(c.q), f64(c.k), f64(c.v)];
      const y = T.scaledDotProductAttention(q, k, v, { causal: name === "sdpa_causal" });
      close(y, c.y);
      y.backward(f64(c.gy, false));
      close(q.grad, c.gq, 1e-9);
      close(k.grad, c.gk, 1e-9);
      close(v.grad, c.gv, 1e-9);
    });
  }

  it("bfloat16 and float16 rounding matches PyTorch bit for bit", () => {
    const c = ops.rounding;
    const f32 = T.tensor(c.values, { dtype: "float32" });
    expect(Array.from(T.cast(f32, "bfloat16").toHost())).toEqual(c.bf16_bits);
    expect(Array.from(T.cast(f32, "float16").toHost())).toEqual(c.f16_bits);
  });
});
