// Every differentiable op against central finite differences in float64.
import { describe, expect, it } from "vitest";
import * as T from "../src";
import { gradcheck } from "../src/testing";

const g = new T.Generator(42);
const r = (...shape: number[]): T.Tensor => T.randn(shape, { dtype: "float64", generator: g });
const pos = (...shape: number[]): T.Tensor => T.add(T.abs(r(...shape)), 0.3);

const cases: [string, () => T.Tensor[], (...t: T.Tensor[]) => T.Tensor][] = [
  ["add (broadcast)", () => [r(3, 1, 4), r(2, 4)], (a, b) => T.add(a, b)],
  ["sub", () => [r(3, 4), r(4)], (a, b) => T.sub(a, b)],
  ["mul", () => [r(2, 3), r(2, 1)], (a, b) => T.mul(a, b)],
  ["div", () => [r(2, 3), pos(2, 3)], (a, b) => T.div(a, b)],
  ["pow tensor", () => [pos(5), r(5)], (a, b) => T.pow(a, b)],
  ["pow scalar", () => [pos(5)], (a) => T.pow(a, 2.5)],
  ["neg", () => [r(4)], (a) => T.neg(a)],
  ["exp", () => [r(4)], (a) => T.exp(a)],
  ["log", () => [pos(4)], (a) => T.log(a)],
  ["sqrt", () => [pos(4)], (a) => T.sqrt(a)],
  ["rsqrt", () => [pos(4)], (a) => T.rsqrt(a)],
  ["tanh", () => [r(6)], (a) => T.tanh(a)],
  ["gelu", () => [r(6)], (a) => T.gelu(a)],
  ["relu", () => [r(6)], (a) => T.relu(a)],
  ["sigmoid", () => [r(6)], (a) => T.sigmoid(a)],
  ["abs", () => [r(6)], (a) => T.abs(a)],
  ["square", () => [r(6)], (a) => T.square(a)],
  ["maximum", () => [r(6), r(6)], (a, b) => T.maximum(a, b)],
  ["minimum", () => [r(6), r(6)], (a, b) => T.minimum(a, b)],
  ["sum over dims", () => [r(2, 3, 4)], (a) => T.sum(a, [0, 2])],
  ["mean", () => [r(2, 3, 4)], (a) => T.mean(a, 1, true)],
  ["max over dim", () => [r(3, 5)], (a) => T.max(a, 1)],
  ["min over all", () => [r(3, 5)], (a) => T.min(a)],
  ["softmax", () => [r(3, 5)], (a) => T.softmax(a, -1)],
  ["softmax dim 0", () => [r(3, 5)], (a) => T.softmax(a, 0)],
  ["logSoftmax", () => [r(3, 5)], (a) => T.logSoftmax(a, 1)],
  ["matmul batched broadcast", () => [r(2, 3, 4), r(4, 5)], (a, b) => T.matmul(a, b)],
  ["matmul vector", () => [r(4), r(4, 3)], (a, b) => T.matmul(a, b)],
  ["linear", () => [r(2, 3, 4), r(5, 4), r(5)], (x, w, b) => T.linear(x, w, b)],
  ["layerNorm", () => [r(3, 8), r(8), r(8)], (x, w, b) => T.layerNorm(x, 8, w, b)],
  ["embedding weight", () => [r(5, 3)], (w) => T.embedding(T.tensor([[0, 4], [4, 1]], { dtype: "int32" }), w)],
  ["crossEntropy", () => [r(5, 4)], (l) => T.crossEntropy(l, T.tensor([0, 3, -100, 2, 1], { dtype: "int32" }))],
  ["crossEntropy sum", () => [r(3, 4)], (l) => T.crossEntropy(l, T.tensor([1, 1, 2], { dtype: "int32" }), { reduction: "sum" })],
  ["attention causal", () => [r(1, 2, 4, 3), r(1, 2, 4, 3), r(1, 2, 4, 3)], (q, k, v) => T.scaledDotProductAttention(q, k, v, { causal: true })],
  ["attention", () => [r(2, 1, 3, 2), r(2, 1, 3, 2), r(2, 1, 3, 2)], (q, k, v) => T.scaledDotProductAttention(q, k, v)],
  ["qkvAttention causal", () => [r(2, 3, 12)], (qkv) => T.qkvAttention(qkv, 2, { causal: true })],
  ["cat", () => [r(2, 3), r(2, 2)], (a, b) => T.cat([a, b], 1)],
  ["split", () => [r(5, 2)], (a) => T.mul(T.split(a, [2, 3], 0)[1], 2)],
  ["stack", () => [r(3), r(3)], (a, b) => T.stack([a, b], 1)],
  ["where", () => [r(4), r(4)], (a, b) => T.where(T.compare("gt", a, b), a, b)],
  ["maskedFill", () => [r(2, 3)], (a) => T.maskedFill(a, T.tensor([[1, 0, 0], [0, 1, 0]], { dtype: "float64" }), -2)],
  ["views: reshape transpose permute slice", () => [r(2, 3, 4)], (a) => T.slice(T.permute(T.transpose(T.reshape(a, [6, 4]), 0, 1), [1, 0]), 0, 1, 5)],
  ["expand", () => [r(3, 1)], (a) => T.expand(a, [2, 3, 4])],
  ["select squeeze unsqueeze flatten", () => [r(2, 3, 1)], (a) => T.flatten(T.unsqueeze(T.squeeze(T.select(a, 0, 1), 1), 0))],
  ["reshape of non-contiguous (copy path)", () => [r(3, 4)], (a) => T.reshape(T.transpose(a, 0, 1), [2, 6])],
  ["checkpoint", () => [r(2, 4), r(4, 4)], (x, w) => T.checkpoint((x2) => T.tanh(T.matmul(x2, w)), x)],
];

describe("gradients against central finite differences (float64)", () => {
  for (const [name, make, fn] of cases) {
    it(name, () => {
      const res = gradcheck(fn, make());
      expect(res.maxError, JSON.stringify(res.worst)).toBeLessThan(1e-6);
    });
  }
});
