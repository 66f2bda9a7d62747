/**
 * The op conformance suite every Backend must pass (the CPU backend in CI, the CUDA backend on GPU
 * machines). Each case draws fresh random inputs, runs forward and backward on the device under
 * test in the dtype under test, and compares every output and gradient with the same computation
 * done by the CPU backend in float64. Tolerances are relative errors ‖out − ref‖ / ‖ref‖.
 */
import type { DType } from "../dtype";
import { Generator } from "../random";
import { autocast, autocastDType } from "../gradMode";
import { scope } from "../memory";
import type { Tensor } from "../tensor";
import * as ops from "../ops";
import { relativeError } from "./compare";

export const CONFORMANCE_TOLERANCE: Readonly<Record<DType, number>> = {
  float64: 1e-9,
  float32: 1e-5,
  bfloat16: 1.5e-2,
  float16: 5e-3,
  int32: 0,
};

export interface InputSpec {
  shape: number[];
  /**
   * "normal" (default), "positive" (for log/sqrt), "distinct" (a shuffled ramp of integers, exact in
   * every float dtype: max/min must not see ties that only rounding to 16 bits created), or an
   * int32 range [low, high).
   */
  kind?: "normal" | "positive" | "distinct" | { low: number; high: number };
  grad?: boolean;
}

export interface ConformanceCase {
  readonly name: string;
  readonly inputs: InputSpec[];
  readonly fn: (...t: Tensor[]) => Tensor;
  /** Extra slack for ops whose error grows with size (long reductions in bf16). */
  readonly slack?: number;
  /**
   * Run under autocast (bfloat16; float16 when the dtype under test is float16), the way mixed
   * precision training runs it; the float64 reference runs without. The tolerance is then the
   * autocast dtype's.
   */
  readonly autocast?: boolean;
}

const n = (shape: number[], grad = true): InputSpec => ({ shape, grad });

export function conformanceCases(): ConformanceCase[] {
  return [
    { name: "add broadcast", inputs: [n([4, 1, 5]), n([3, 5])], fn: (a, b) => ops.add(a, b) },
    { name: "sub", inputs: [n([7, 3]), n([7, 3])], fn: (a, b) => ops.sub(a, b) },
    // Slack where inputs rounded to bf16 meet cancellation (the reference sums the unrounded
    // values): the worst of 3,000 random draws per case, over one rounding's tolerance, was 1.9 for
    // the broadcast operand's gradient (a sum of six products; it failed CI once), 1.01 for the
    // divisor's (-a·g / b²), 2.6 for a sum of 15 and 1.1 for exp(-x) at large |x|; x³ (input
    // rounding tripled) and log near 1 came within 10-15% of it.
    { name: "mul broadcast", inputs: [n([2, 3, 4]), n([4])], fn: (a, b) => ops.mul(a, b), slack: 3 },
    { name: "div", inputs: [n([5, 6]), { shape: [5, 6], kind: "positive", grad: true }], fn: (a, b) => ops.div(a, b), slack: 1.5 },
    { name: "neg exp", inputs: [n([9])], fn: (a) => ops.exp(ops.neg(a)), slack: 1.5 },
    { name: "log sqrt rsqrt", inputs: [{ shape: [4, 4], kind: "positive", grad: true }], fn: (a) => ops.add(ops.log(a), ops.mul(ops.sqrt(a), ops.rsqrt(a))), slack: 1.5 },
    { name: "tanh", inputs: [n([3, 8])], fn: (a) => ops.tanh(a) },
    { name: "gelu", inputs: [n([3, 8])], fn: (a) => ops.gelu(a) },
    { name: "relu sigmoid", inputs: [n([3, 8])], fn: (a) => ops.add(ops.relu(a), ops.sigmoid(a)) },
    { name: "pow scalar", inputs: [{ shape: [6], kind: "positive", grad: true }], fn: (a) => ops.pow(a, 3), slack: 1.5 },
    { name: "sum dims", inputs: [n([3, 4, 5])], fn: (a) => ops.sum(a, [0, 2]), slack: 3 },
    { name: "mean keepdim", inputs: [n([3, 4, 5])], fn: (a) => ops.mean(a, 1, true) },
    { name: "max last", inputs: [{ shape: [6, 7], kind: "distinct", grad: true }], fn: (a) => ops.max(a, -1) },
    { name: "softmax", inputs: [n([5, 9])], fn: (a) => ops.softmax(a, -1) },
    { name: "softmax dim 0", inputs: [n([5, 9])], fn: (a) => ops.softmax(a, 0) },
    { name: "log softmax", inputs: [n([5, 9])], fn: (a) => ops.logSoftmax(a, -1) },
    { name: "matmul batched", inputs: [n([2, 5, 7]), n([2, 7, 3])], fn: (a, b) => ops.matmul(a, b) },
    { name: "matmul transposed operand", inputs: [n([6, 5]), n([4, 5])], fn: (a, b) => ops.matmul(a, ops.transpose(b, 0, 1)) },
    { name: "matmul broadcast weight", inputs: [n([2, 3, 8]), n([8, 16])], fn: (a, b) => ops.matmul(a, b) },
    { name: "linear with bias", inputs: [n([2, 3, 16]), n([24, 16]), n([24])], fn: (x, w, b) => ops.linear(x, w, b) },
    { name: "layer norm", inputs: [n([6, 32]), n([32]), n([32])], fn: (x, w, b) => ops.layerNorm(x, 32, w, b, 1e-5) },
    {
      name: "embedding",
      inputs: [{ shape: [3, 5], kind: { low: 0, high: 11 } }, n([11, 8])],
      fn: (ids, w) => ops.embedding(ids, w),
    },
    {
      name: "cross entropy",
      inputs: [n([12, 17]), { shape: [12], kind: { low: 0, high: 17 } }],
      fn: (l, t) => ops.crossEntropy(l, t),
    },
    {
      name: "attention causal d64",
      inputs: [n([1, 2, 40, 64]), n([1, 2, 40, 64]), n([1, 2, 40, 64])],
      fn: (q, k, v) => ops.scaledDotProductAttention(q, k, v, { causal: true }),
    },
    {
      name: "attention d128",
      inputs: [n([1, 1, 24, 128]), n([1, 1, 24, 128]), n([1, 1, 24, 128])],
      fn: (q, k, v) => ops.scaledDotProductAttention(q, k, v, { causal: false }),
    },
    { name: "linear under autocast (fp32 parameters)", inputs: [n([3, 5, 32]), n([24, 32]), n([24])], fn: (x, w, b) => ops.linear(x, w, b), autocast: true },
    { name: "linear, 2-D, fused bias gradient", inputs: [n([37, 16]), n([40, 16]), n([40])], fn: (x, w, b) => ops.linear(x, w, b) },
    {
      name: "gelu mlp",
      inputs: [n([2, 5, 16]), n([64, 16]), n([64]), n([16, 64]), n([16])],
      fn: (x, w1, b1, w2, b2) => ops.geluMlp(x, w1, b1, w2, b2),
    },
    {
      name: "gelu mlp under autocast (fp32 parameters)",
      inputs: [n([24, 32]), n([128, 32]), n([128]), n([32, 128]), n([32])],
      fn: (x, w1, b1, w2, b2) => ops.geluMlp(x, w1, b1, w2, b2),
      autocast: true,
    },
    {
      name: "qkv attention causal d64",
      inputs: [n([2, 40, 3 * 2 * 64])],
      fn: (qkv) => ops.qkvAttention(qkv, 2, { causal: true }),
    },
    {
      name: "layer norm with a bf16 output under autocast",
      inputs: [n([6, 64]), n([64]), n([64])],
      fn: (x, w, b) => ops.layerNorm(x, 64, w, b, 1e-5, { outputDtype: autocastDType() ?? x.dtype }),
      autocast: true,
    },
    { name: "layer norm under autocast", inputs: [n([6, 64]), n([64]), n([64])], fn: (x, w, b) => ops.layerNorm(x, 64, w, b, 1e-5), autocast: true },
    {
      name: "cross entropy under autocast",
      inputs: [n([12, 40]), { shape: [12], kind: { low: 0, high: 40 } }],
      fn: (l, t) => ops.crossEntropy(l, t),
      autocast: true,
    },
    { name: "add float32 + bfloat16", inputs: [n([8, 24]), n([8, 24])], fn: (a, b) => ops.add(a, ops.cast(b, "bfloat16")) },
    { name: "cat split", inputs: [n([2, 3]), n([2, 5])], fn: (a, b) => ops.mul(ops.split(ops.cat([a, b], 1), [4, 4], 1)[1], 2) },
    { name: "where", inputs: [n([4, 6]), n([4, 6])], fn: (a, b) => ops.where(ops.compare("gt", a, 0), a, b) },
    { name: "permute contiguous", inputs: [n([2, 3, 4])], fn: (a) => ops.mul(ops.contiguous(ops.permute(a, [2, 0, 1])), 3) },
  ];
}

export function drawInput(spec: InputSpec, gen: Generator): Tensor {
  const kind = spec.kind ?? "normal";
  if (typeof kind === "object") return ops.randint(kind.low, kind.high, spec.shape, { generator: gen });
  if (kind === "distinct") {
    const u = ops.rand(spec.shape, { dtype: "float64", generator: gen });
    const draws = u.toArray();
    u.dispose();
    const order = draws.map((_, i) => i).sort((i, j) => draws[i] - draws[j]);
    const ramp = new Float64Array(draws.length);
    order.forEach((idx, rank) => (ramp[idx] = rank - Math.floor(draws.length / 2)));
    return ops.fromHost(ramp, spec.shape, "float64");
  }
  const t = ops.randn(spec.shape, { dtype: "float64", generator: gen });
  if (kind === "positive") {
    const p = ops.add(ops.abs(t), 0.2);
    t.dispose();
    return p;
  }
  return t;
}

export interface ConformanceResult {
  readonly name: string;
  /** Largest relative error over the output and every gradient. */
  readonly error: number;
  readonly tolerance: number;
  readonly ok: boolean;
  readonly detail: string;
}

/** Runs one case on `device` in `dtype` with inputs drawn from `seed`. */
export function runConformanceCase(c: ConformanceCase, device: string, dtype: DType, seed: number): ConformanceResult {
  return scope(() => {
    const gen = new Generator(seed);
    const base = c.inputs.map((s) => drawInput(s, gen));
    const run = (dev: string, dt: DType): Float64Array[] =>
      scope(() => {
        const ins = base.map((t, i) => {
          const moved = ops.to(t.dtype === "int32" ? t : ops.cast(t, dt), dev);
          const leaf = moved === t ? t.detach() : moved;
          if (c.inputs[i].grad) leaf.requiresGrad_(true);
          return leaf;
        });
        const ac = c.autocast && dt !== "float64" ? (dt === "float16" ? "float16" : "bfloat16") : null;
        const y = ac ? autocast(ac, () => c.fn(...ins)) : c.fn(...ins);
        const probe = ops.to(ops.cast(ops.randn(y.shape, { dtype: "float64", generator: new Generator(seed + 1) }), y.dtype), dev);
        ops.sum(ops.mul(y, probe)).backward();
        const outs = [y.toFloat64Array()];
        ins.forEach((t, i) => {
          if (c.inputs[i].grad) outs.push(t.grad ? t.grad.toFloat64Array() : new Float64Array(t.numel));
          t.grad?.dispose();
        });
        return outs;
      });
    const ref = run("cpu", "float64");
    const got = run(device, dtype);
    const acTolerance = c.autocast && dtype !== "float64" ? CONFORMANCE_TOLERANCE[dtype === "float16" ? "float16" : "bfloat16"] : 0;
    const tolerance = Math.max(CONFORMANCE_TOLERANCE[dtype], acTolerance) * (c.slack ?? 1);
    let error = 0;
    const parts: string[] = [];
    got.forEach((g, i) => {
      const e = relativeError(g, ref[i]);
      parts.push(`${i === 0 ? "out" : `grad${i}`}=${e.toExponential(2)}`);
      error = Math.max(error, e);
    });
    return { name: c.name, error, tolerance, ok: error <= tolerance, detail: parts.join(" ") };
  });
}
