/**
 * Parameter initialisers (PyTorch's `torch.nn.init`): each fills a tensor in place, under `noGrad`,
 * from a seeded generator (the tensor package's default one unless a `generator` is given), so the
 * same seed gives the same weights on every backend. Temporaries live in a scope and are freed at once.
 * On a meta tensor the same ops are recorded and replayed when it is materialised (see
 * @fulgur/tensor's meta backend), so deferred initialisation gives the eager weights bit for bit.
 */
import { noGrad, rand, randn, recordInit, scope, tensor } from "@fulgur/tensor";
import type { DType, Generator, Tensor } from "@fulgur/tensor";

export type Nonlinearity = "linear" | "conv1d" | "conv2d" | "sigmoid" | "tanh" | "relu" | "leaky_relu" | "selu";
export type FanMode = "fan_in" | "fan_out";

// Draws in float32 (or float64 for float64 tensors) and lets copy_ round into 16-bit dtypes, so a
// bf16 model gets the rounded float32 weights rather than a different random stream.
function drawDType(t: Tensor): DType {
  return t.dtype === "float64" ? "float64" : "float32";
}

function checkFloating(t: Tensor, op: string): void {
  if (t.dtype === "int32") throw new TypeError(`${op}: the tensor must be floating point; got int32`);
}

/** Fills `t` with U(a, b). */
export function uniform_(t: Tensor, a = 0, b = 1, generator?: Generator): Tensor {
  checkFloating(t, "uniform_");
  if (!(b >= a)) throw new RangeError(`uniform_: need a <= b; got a=${a}, b=${b}`);
  noGrad(() =>
    scope(() => {
      const u = rand(t.shape, { dtype: drawDType(t), device: t.device, generator });
      t.copy_(u.mul(b - a).add(a));
    }),
  );
  return t;
}

/** Fills `t` with N(mean, std²). */
export function normal_(t: Tensor, mean = 0, std = 1, generator?: Generator): Tensor {
  checkFloating(t, "normal_");
  if (!(std >= 0)) throw new RangeError(`normal_: std must be >= 0; got ${std}`);
  noGrad(() =>
    scope(() => {
      const n = randn(t.shape, { dtype: drawDType(t), device: t.device, generator });
      t.copy_(n.mul(std).add(mean));
    }),
  );
  return t;
}

export function constant_(t: Tensor, value: number): Tensor {
  noGrad(() => t.fill_(value));
  return t;
}

export function zeros_(t: Tensor): Tensor {
  return constant_(t, 0);
}

export function ones_(t: Tensor): Tensor {
  return constant_(t, 1);
}

/** PyTorch's `_calculate_fan_in_and_fan_out`: dim 1 is fan in, dim 0 fan out, the rest a receptive field. */
export function fanInAndFanOut(shape: readonly number[]): { fanIn: number; fanOut: number } {
  if (shape.length < 2) {
    throw new RangeError(`fan in and fan out need a tensor of at least 2 dimensions; got shape [${shape.join(", ")}]`);
  }
  let receptive = 1;
  for (let i = 2; i < shape.length; i++) receptive *= shape[i];
  return { fanIn: shape[1] * receptive, fanOut: shape[0] * receptive };
}

/** PyTorch's `calculate_gain`. `param` is the negative slope of leaky_relu (default 0.01). */
export function calculateGain(nonlinearity: Nonlinearity, param?: number): number {
  switch (nonlinearity) {
    case "linear":
    case "conv1d":
    case "conv2d":
    case "sigmoid":
      return 1;
    case "tanh":
      return 5 / 3;
    case "relu":
      return Math.SQRT2;
    case "leaky_relu": {
      const slope = param ?? 0.01;
      return Math.sqrt(2 / (1 + slope * slope));
    }
    case "selu":
      return 3 / 4;
    default:
      throw new RangeError(
        `calculateGain: unknown nonlinearity ${JSON.stringify(nonlinearity)}; allowed: linear, conv1d, conv2d, sigmoid, tanh, relu, leaky_relu, selu`,
      );
  }
}

export interface KaimingOptions {
  /** Negative slope for leaky_relu (PyTorch's `a`, default 0). */
  readonly a?: number;
  readonly mode?: FanMode;
  readonly nonlinearity?: Nonlinearity;
  readonly generator?: Generator;
}

function kaimingStd(t: Tensor, options: KaimingOptions): number {
  const { fanIn, fanOut } = fanInAndFanOut(t.shape);
  const mode = options.mode ?? "fan_in";
  if (mode !== "fan_in" && mode !== "fan_out") {
    throw new RangeError(`kaiming init: mode must be "fan_in" or "fan_out"; got ${JSON.stringify(mode)}`);
  }
  const gain = calculateGain(options.nonlinearity ?? "leaky_relu", options.a ?? 0);
  return gain / Math.sqrt(mode === "fan_in" ? fanIn : fanOut);
}

/**
 * U(-bound, bound) with bound = gain·sqrt(3 / fan). With a = sqrt(5) (what `Linear` uses) the bound
 * is 1/sqrt(fan_in), PyTorch's default for linear layers.
 */
export function kaimingUniform_(t: Tensor, options: KaimingOptions = {}): Tensor {
  const bound = Math.sqrt(3) * kaimingStd(t, options);
  return uniform_(t, -bound, bound, options.generator);
}

export function kaimingNormal_(t: Tensor, options: KaimingOptions = {}): Tensor {
  return normal_(t, 0, kaimingStd(t, options), options.generator);
}

export interface XavierOptions {
  readonly gain?: number;
  readonly generator?: Generator;
}

export function xavierUniform_(t: Tensor, options: XavierOptions = {}): Tensor {
  const { fanIn, fanOut } = fanInAndFanOut(t.shape);
  const bound = (options.gain ?? 1) * Math.sqrt(6 / (fanIn + fanOut));
  return uniform_(t, -bound, bound, options.generator);
}

export function xavierNormal_(t: Tensor, options: XavierOptions = {}): Tensor {
  const { fanIn, fanOut } = fanInAndFanOut(t.shape);
  return normal_(t, 0, (options.gain ?? 1) * Math.sqrt(2 / (fanIn + fanOut)), options.generator);
}

export interface TruncNormalOptions {
  readonly mean?: number;
  readonly std?: number;
  /** Lower cut-off in absolute units (PyTorch's default -2). */
  readonly a?: number;
  /** Upper cut-off in absolute units (default 2). */
  readonly b?: number;
  readonly generator?: Generator;
}

/**
 * N(mean, std²) truncated to [a, b], by PyTorch's inverse-CDF method: a uniform draw between the
 * CDF values of the cut-offs, mapped back through the normal quantile. The mapping runs on the host
 * (initialisation is one-off), with the draw still from the seeded generator.
 */
export function truncNormal_(t: Tensor, options: TruncNormalOptions = {}): Tensor {
  checkFloating(t, "truncNormal_");
  const mean = options.mean ?? 0;
  const std = options.std ?? 1;
  const a = options.a ?? -2;
  const b = options.b ?? 2;
  if (!(std > 0)) throw new RangeError(`truncNormal_: std must be > 0; got ${std}`);
  if (!(a < b)) throw new RangeError(`truncNormal_: need a < b; got a=${a}, b=${b}`);
  const lo = normalCdf((a - mean) / std);
  const hi = normalCdf((b - mean) / std);
  const fill = (dst: Tensor, [draws]: readonly Tensor[]): void => {
    const u = draws.toArray();
    const out = new Float64Array(u.length);
    for (let i = 0; i < u.length; i++) {
      const x = mean + std * normalQuantile(lo + (hi - lo) * u[i]);
      out[i] = Math.min(b, Math.max(a, x));
    }
    dst.copy_(tensor(out, { shape: [...dst.shape], dtype: "float64", device: dst.device }));
  };
  noGrad(() =>
    scope(() => {
      // Drawn on t's device (the same Philox numbers on any); on meta the draw is recorded like any
      // op and the host-side mapping is recorded to run on it at materialisation.
      const u = rand(t.shape, { dtype: "float64", device: t.device, generator: options.generator });
      if (t.device === "meta") recordInit(t, [u], fill);
      else fill(t, [u]);
    }),
  );
  return t;
}

/** Standard normal CDF through erfc. */
function normalCdf(x: number): number {
  return 0.5 * erfc(-x / Math.SQRT2);
}

function erfc(x: number): number {
  // Numerical Recipes' erfcc: fractional error below 1.2e-7 everywhere, enough for cut-off CDFs.
  const z = Math.abs(x);
  const t = 1 / (1 + 0.5 * z);
  const r =
    t *
    Math.exp(
      -z * z -
        1.26551223 +
        t *
          (1.00002368 +
            t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))),
    );
  return x >= 0 ? r : 2 - r;
}

/** Acklam's inverse normal CDF (relative error < 1.2e-9), clamped away from 0 and 1. */
function normalQuantile(p: number): number {
  const q0 = Math.min(1 - 1e-16, Math.max(1e-16, p));
  const a = [-39.69683028665376, 220.9460984245205, -275.9285104469687, 138.357751867269, -30.66479806614716, 2.506628277459239];
  const b = [-54.47609879822406, 161.5858368580409, -155.6989798598866, 66.80131188771972, -13.28068155288572];
  const c = [-0.007784894002430293, -0.3223964580411365, -2.400758277161838, -2.549732539343734, 4.374664141464968, 2.938163982698783];
  const d = [0.007784695709041462, 0.3224671290700398, 2.445134137142996, 3.754408661907416];
  const pl = 0.02425;
  if (q0 < pl) {
    const q = Math.sqrt(-2 * Math.log(q0));
    return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  if (q0 > 1 - pl) {
    const q = Math.sqrt(-2 * Math.log(1 - q0));
    return -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) / ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  }
  const q = q0 - 0.5;
  const r = q * q;
  return ((((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q) / (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
}
