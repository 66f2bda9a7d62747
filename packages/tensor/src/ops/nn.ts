/**
 * The fused neural-network ops: softmax, layer norm, embedding, cross entropy, attention, dropout.
 * Each is one Backend call forward and one backward, so a GPU backend can fuse the work.
 */
import { autocastDType, noGrad } from "../gradMode";
import { defaultGenerator, type Generator } from "../random";
import type { DType } from "../dtype";
import { formatShape, normDim, shapesEqual } from "../shape";
import type { Tensor } from "../tensor";
import { assertDtype, assertFloating, emptyLike, emptyTensor, record, sameDevice } from "./util";
import { cast, compare, div, mul } from "./elementwise";
import { sum } from "./reduce";
import { contiguous, reshape, transpose } from "./views";
import { autocastOperand } from "./linalg";

/**
 * Inside autocast, precision-sensitive ops produce float32 from 16-bit inputs (PyTorch's autocast
 * "fp32 list"); otherwise the input's dtype.
 */
function autocastResultDtype(dtype: DType): DType {
  return autocastDType() && (dtype === "bfloat16" || dtype === "float16") ? "float32" : dtype;
}

function fp32UnderAutocast(t: Tensor): Tensor {
  const dt = autocastResultDtype(t.dtype);
  return dt === t.dtype ? t : cast(t, dt);
}

/** Saved statistics (mean, rstd, log-sum-exp) are float32, or float64 for float64 inputs. */
function statsDtype(t: Tensor): "float32" | "float64" {
  return t.dtype === "float64" ? "float64" : "float32";
}

function softmaxImpl(x0: Tensor, dim: number, log: boolean): Tensor {
  assertFloating(log ? "logSoftmax" : "softmax", x0);
  const x = fp32UnderAutocast(x0);
  const d = normDim(dim, x.ndim, "softmax");
  if (d !== x.ndim - 1) {
    const xt = transpose(x, d, -1);
    const y = softmaxImpl(xt, -1, log);
    return transpose(y, d, -1);
  }
  const y = emptyLike(x);
  x.backend.softmax(x, y, log);
  return record(y, log ? "LogSoftmax" : "Softmax", [x], [y], (g, [sy]) => {
    const gx = emptyLike(sy);
    sy.backend.softmaxBackward(sy, contiguous(g), gx, log);
    return [gx];
  });
}

export const softmax = (x: Tensor, dim = -1): Tensor => softmaxImpl(x, dim, false);
export const logSoftmax = (x: Tensor, dim = -1): Tensor => softmaxImpl(x, dim, true);

export interface LayerNormOptions {
  /**
   * The output's dtype. By default the input's, or float32 for a 16-bit input under autocast (as
   * PyTorch's autocast runs layer norm in float32). A layer norm that feeds only a bf16 matrix
   * product can ask for bfloat16: the same values the product would cast to, without the float32
   * round trip.
   */
  readonly outputDtype?: DType;
}

/**
 * Layer norm over the last dimension (normalizedShape must be [x.shape.at(-1)]). It computes in
 * float32 (float64 for float64 input) whatever the input dtype, so a 16-bit input under autocast
 * is read as is rather than cast first.
 */
export function layerNorm(
  x: Tensor,
  normalizedShape: number | readonly number[],
  weight?: Tensor | null,
  bias?: Tensor | null,
  eps = 1e-5,
  options: LayerNormOptions = {},
): Tensor {
  const ns = typeof normalizedShape === "number" ? [normalizedShape] : [...normalizedShape];
  assertFloating("layerNorm", x);
  const dim = x.shape[x.ndim - 1];
  if (ns.length !== 1 || ns[0] !== dim) {
    throw new RangeError(`layerNorm: normalizedShape ${formatShape(ns)} must be the last dimension of ${formatShape(x.shape)}; only one normalized dimension is supported`);
  }
  for (const [field, p] of [["weight", weight], ["bias", bias]] as const) {
    if (p && (p.ndim !== 1 || p.shape[0] !== dim)) throw new RangeError(`layerNorm: ${field} must have shape [${dim}], got ${formatShape(p.shape)}`);
  }
  const outDtype = options.outputDtype ?? autocastResultDtype(x.dtype);
  if (outDtype === "int32") throw new TypeError(`layerNorm: outputDtype must be a floating dtype, got ${outDtype}`);
  sameDevice("layerNorm", x, weight, bias);
  const w = weight ?? null;
  const b = bias ?? null;
  // Rows of x for the kernels, outside the graph: the node's input is x itself (see backward).
  const x2 = noGrad(() => contiguous(reshape(x, [-1, dim])));
  const rows = x2.shape[0];
  const out = emptyTensor([rows, dim], outDtype, x.device);
  const mean = emptyTensor([rows], statsDtype(x), x.device);
  const rstd = emptyTensor([rows], statsDtype(x), x.device);
  x.backend.layerNorm(x2, w, b, eps, out, mean, rstd);
  const xShape = x.shape;
  const y = record(out, "LayerNorm", [x, w, b], [x2, mean, rstd, ...(w ? [w] : [])], (g, saved, ctx) => {
    const [sx, sm, sr, sw] = saved;
    // A split backward's passes ([Note: the weight pass] in autograd.ts) ask for x, or for the
    // weight and bias: the kernel then computes only those, summed as in a call computing all three.
    const gw = w && w.requiresGrad && ctx.wantsGrad(1) ? zerosOf([dim], w) : null;
    const gb = b && b.requiresGrad && ctx.wantsGrad(2) ? zerosOf([dim], b) : null;
    let gx: Tensor | null = null;
    let acc: Tensor | null = null;
    if (ctx.wantsGrad(0)) {
      // In a pre-norm residual stream, x's gradient from the residual path is already summed: the
      // kernel adds this one into it in the same pass instead of a separate add.
      acc = ctx.takePending(0, (t) => t.dtype === sx.dtype && shapesEqual(t.shape, xShape));
      gx = acc ?? emptyTensor(xShape, sx.dtype, sx.device);
    }
    const gxRows = gx && { storage: gx.storage, shape: [rows, dim], strides: [dim, 1], offset: gx.offset };
    if (gxRows || gw || gb) sx.backend.layerNormBackward(contiguous(g), sx, sw ?? null, sm, sr, gxRows, gw, gb, acc !== null);
    return [gx, gw, gb];
  });
  mean.dispose();
  rstd.dispose();
  const yr = reshape(y, x.shape);
  if (x2 !== x) x2.dispose();
  return yr;
}

function zerosOf(shape: readonly number[], like: Tensor): Tensor {
  const t = emptyTensor(shape, like.dtype, like.device);
  t.backend.fill(t, 0);
  return t;
}

/** Rows of `weight` picked by int32 `ids` of any shape: output [...ids.shape, D]. */
export function embedding(ids: Tensor, weight: Tensor): Tensor {
  assertDtype("embedding", "ids", ids, "int32");
  if (weight.ndim !== 2) throw new RangeError(`embedding: weight must be 2-D [num, dim], got ${formatShape(weight.shape)}`);
  sameDevice("embedding", ids, weight);
  const [num, dim] = weight.shape;
  const flat = contiguous(reshape(ids, [-1]));
  const out = emptyTensor([flat.shape[0], dim], weight.dtype, weight.device);
  weight.backend.embedding(weight, flat, out);
  const y = record(out, "Embedding", [null, weight], [flat], (g, [sids], ctx) => {
    // All of it is weight gradient: a split backward's input pass leaves it to the weight pass.
    if (!ctx.wantsGrad(1)) return [null, null];
    // The backend adds rows into gw: a weight that already holds a gradient gets these added to it
    // in place, with no zeroed buffer and no separate sum ([Note: accumulating in the product]).
    const held = ctx.takeLeafGrad(1, (t) => t.dtype === g.dtype && t.device === g.device && shapesEqual(t.shape, [num, dim]));
    const gw = held ?? zerosOf([num, dim], g);
    g.backend.embeddingBackward(contiguous(reshape(g, [-1, dim])), sids, gw);
    return [null, gw];
  });
  return reshape(y, [...ids.shape, dim]);
}

export interface CrossEntropyOptions {
  ignoreIndex?: number;
  reduction?: "mean" | "sum" | "none";
}

/**
 * Cross entropy between logits [N, C] (or [..., C]) and int32 class targets [N] (or [...]).
 * "mean" divides by the number of targets that are not ignoreIndex.
 */
export function crossEntropy(logits: Tensor, targets: Tensor, options: CrossEntropyOptions = {}): Tensor {
  const ignoreIndex = options.ignoreIndex ?? -100;
  const reduction = options.reduction ?? "mean";
  if (!["mean", "sum", "none"].includes(reduction)) {
    throw new TypeError(`crossEntropy: reduction ${JSON.stringify(reduction)} is not one of "mean", "sum", "none"`);
  }
  assertDtype("crossEntropy", "targets", targets, "int32");
  sameDevice("crossEntropy", logits, targets);
  // 16-bit logits are read as they are (the kernels compute in float32); under autocast the losses
  // are float32, as PyTorch's autocast gives, and the gradient comes back in the logits' dtype.
  const lossDtype = autocastResultDtype(logits.dtype);
  const c = logits.shape[logits.ndim - 1];
  const n = logits.numel / c;
  if (targets.numel !== n || targets.ndim !== logits.ndim - 1) {
    throw new RangeError(`crossEntropy: targets ${formatShape(targets.shape)} do not match logits ${formatShape(logits.shape)} (expected [${logits.shape.slice(0, -1).join(", ")}])`);
  }
  const l2 = contiguous(reshape(logits, [n, c]));
  const t1 = contiguous(reshape(targets, [n]));
  const loss = emptyTensor([n], lossDtype, logits.device);
  const lse = emptyTensor([n], statsDtype(logits), logits.device);
  logits.backend.crossEntropy(l2, t1, ignoreIndex, loss, lse);
  const perRow = record(loss, "CrossEntropy", [l2, null], [l2, t1, lse], (g, [sl, st, slse]) => {
    const gl = emptyLike(sl);
    sl.backend.crossEntropyBackward(sl, st, slse, contiguous(g), ignoreIndex, gl);
    return [gl, null];
  });
  lse.dispose();
  if (reduction === "none") return reshape(perRow, targets.shape);
  const total = sum(perRow);
  if (reduction === "sum") return total;
  // The count stays on the device: no host round-trip in the training step.
  const valid = compare("ne", cast(t1, "float32"), ignoreIndex);
  const count = sum(valid);
  return div(total, count);
}

export interface AttentionOptions {
  causal?: boolean;
  /** Multiplies q·k; defaults to 1/sqrt(head dim). */
  scale?: number;
}

/** Scaled dot-product attention over [B, H, T, D] (flash-style: only the row log-sum-exp is saved). */
export function scaledDotProductAttention(q0: Tensor, k0: Tensor, v0: Tensor, options: AttentionOptions = {}): Tensor {
  sameDevice("scaledDotProductAttention", q0, k0, v0);
  for (const [name, t] of [["q", q0], ["k", k0], ["v", v0]] as const) {
    if (t.ndim !== 4) throw new RangeError(`scaledDotProductAttention: ${name} must be [B, H, T, D], got ${formatShape(t.shape)}`);
  }
  if (q0.shape.some((s, i) => s !== k0.shape[i] || s !== v0.shape[i])) {
    throw new RangeError(`scaledDotProductAttention: q ${formatShape(q0.shape)}, k ${formatShape(k0.shape)} and v ${formatShape(v0.shape)} must have the same shape`);
  }
  // Strided views go straight to the backend (the contract allows them): the GPT's q, k, v are
  // views into one qkv projection, and copying them out cost three full copies per layer.
  const q = autocastOperand(q0);
  const k = autocastOperand(k0);
  const v = autocastOperand(v0);
  const [bsz, h, t, d] = q.shape;
  const causal = options.causal ?? false;
  const scale = options.scale ?? 1 / Math.sqrt(d);
  const out = emptyLike(q);
  const lse = emptyTensor([bsz, h, t], statsDtype(q), q.device);
  q.backend.attention(q, k, v, out, lse, causal, scale);
  const y = record(out, "Attention", [q, k, v], [q, k, v, out, lse], (g, [sq, sk, sv, so, slse]) => {
    const gq = emptyLike(sq);
    const gk = emptyLike(sk);
    const gv = emptyLike(sv);
    sq.backend.attentionBackward(sq, sk, sv, so, slse, contiguous(g), gq, gk, gv, causal, scale);
    return [gq, gk, gv];
  });
  lse.dispose();
  return y;
}

/** Inverted dropout: zeroes each element with probability p and scales the rest by 1/(1-p). */
export function dropout(x: Tensor, p: number, training = true, generator?: Generator): Tensor {
  if (!(p >= 0 && p < 1)) throw new RangeError(`dropout: p must be in [0, 1), got ${p}`);
  if (!training || p === 0) return x;
  const u = emptyTensor(x.shape, "float32", x.device);
  x.backend.random("uniform", u, (generator ?? defaultGenerator()).take(x.numel));
  const keep = cast(compare("ge", u, p), x.dtype);
  u.dispose();
  return mul(mul(x, keep), 1 / (1 - p));
}
