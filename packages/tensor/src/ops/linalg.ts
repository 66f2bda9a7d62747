/** Matrix products: batched matmul with broadcasting, and linear with the bias fused into the product. */
import type { MatmulOptions, View } from "../backend";
import type { DType } from "../dtype";
import { autocastDType } from "../gradMode";
import type { BackwardContext } from "../autograd";
import { broadcastShapes, formatShape, numel, shapesEqual, viewStrides } from "../shape";
import type { Tensor } from "../tensor";
import { batch1, emptyTensor, record, sameDevice } from "./util";
import { autocastCopy } from "./autocastCopies";
import { cast, contiguousCopy } from "./elementwise";
import { sum, sumToShape } from "./reduce";
import { contiguous, expand, reshape, transpose, unsqueeze, squeeze } from "./views";

/** Under autocast, matrix operands are computed in the autocast dtype. */
export function autocastOperand(t: Tensor): Tensor {
  const dt = autocastDType();
  if (!dt || t.dtype === dt || t.dtype === "int32" || t.dtype === "float64") return t;
  return cast(t, dt);
}

/** A [B, M, K] view of a tensor whose leading dims are batch dims (copying only when they cannot merge). */
function as3d(t: Tensor, batch: readonly number[]): { view: View; temp: Tensor | null } {
  const m = t.shape[t.ndim - 2];
  const k = t.shape[t.ndim - 1];
  const full = [...batch, m, k];
  const expanded = expand(t, full);
  const target = [numel(batch), m, k];
  const strides = viewStrides(expanded.shape, expanded.strides, target);
  if (strides) {
    const v = { storage: expanded.storage, shape: target, strides, offset: expanded.offset };
    return { view: v, temp: expanded === t ? null : expanded };
  }
  const c = contiguous(expanded);
  if (expanded !== t) expanded.dispose();
  return { view: { storage: c.storage, shape: target, strides: [m * k, k, 1], offset: c.offset }, temp: c };
}

export function matmul(a0: Tensor, b0: Tensor): Tensor {
  sameDevice("matmul", a0, b0);
  if (a0.ndim === 0 || b0.ndim === 0) throw new RangeError("matmul: both operands need at least one dimension");
  if (a0.ndim === 1) {
    const a2 = unsqueeze(a0, 0);
    const r = matmul(a2, b0);
    return squeeze(r, -2);
  }
  if (b0.ndim === 1) {
    const b2 = unsqueeze(b0, 1);
    const r = matmul(a0, b2);
    return squeeze(r, -1);
  }
  const a = autocastOperand(a0);
  const b = autocastOperand(b0);
  const [m, k] = a.shape.slice(-2);
  const [k2, n] = b.shape.slice(-2);
  if (k !== k2) {
    throw new RangeError(`matmul: inner dimensions differ: ${formatShape(a.shape)} @ ${formatShape(b.shape)}`);
  }
  if (a.dtype !== b.dtype) {
    throw new TypeError(`matmul: operands have dtypes ${a.dtype} and ${b.dtype}; cast one of them`);
  }
  const batch = broadcastShapes(a.shape.slice(0, -2), b.shape.slice(0, -2), "matmul");
  const out3 = emptyTensor([numel(batch), m, n], a.dtype, a.device);
  const av = as3d(a, batch);
  const bv = as3d(b, batch);
  a.backend.matmul(av.view, bv.view, out3);
  av.temp?.dispose();
  bv.temp?.dispose();
  const out = reshape(out3, [...batch, m, n]);
  out3.dispose();
  return record(out, "MatMul", [a, b], [a, b], (g, [sa, sb], ctx) => [
    a.requiresGrad && ctx.wantsGrad(0) ? sumToShape(matmul(g, transpose(sb, -1, -2)), sa.shape) : null,
    b.requiresGrad && ctx.wantsGrad(1) ? sumToShape(matmul(transpose(sa, -1, -2), g), sb.shape) : null,
  ]);
}

/**
 * A parameter in the autocast dtype, cast without recording the cast: the op using it sends the
 * gradient to the parameter itself, in the parameter's dtype, straight from the product (fp32
 * gradients from bf16 operands), instead of a 16-bit gradient and a cast back.
 */
export function autocastParam(p: Tensor): Tensor {
  const dt = autocastDType();
  if (!dt || p.dtype === dt || p.dtype === "int32" || p.dtype === "float64") return p;
  // A trained parameter (a leaf that requires grad) keeps its copy from step to step, and the
  // optimizer refreshes it (autocastCopies.ts); anything else is cast for this use only.
  if (p.requiresGrad && p.gradNode === null) return autocastCopy(p, dt);
  return contiguousCopy(p, dt);
}

/** Whether a product of `ab` operands may write a `target` output directly (every backend can). */
function writesDirectly(ab: DType, target: DType): boolean {
  return target === ab || (target === "float32" && (ab === "bfloat16" || ab === "float16"));
}

/** [rows, cols] -> the [cols, rows] transposed view (no copy). */
function transposedView(t: Tensor): View {
  return { storage: t.storage, shape: [t.shape[1], t.shape[0]], strides: [t.strides[1], t.strides[0]], offset: t.offset };
}

/**
 * Gradients of a linear layer's weight (g2^T @ x2, [out, in]) and bias (column sums of g2, fused
 * into the same product) for `weight` and `bias` as the user holds them: in their own dtype.
 * With `ctx` and the weight's input index, a weight that already holds a gradient gets this one
 * added by the product itself ([Note: accumulating in the product] in autograd.ts).
 */
export function linearParamGrads(
  g2: Tensor,
  x2: Tensor,
  weight: Tensor | null,
  bias: Tensor | null,
  accumulateInto?: { readonly ctx: BackwardContext; readonly index: number },
): [Tensor | null, Tensor | null] {
  const wantW = weight !== null && weight.requiresGrad;
  const wantB = bias !== null && bias.requiresGrad;
  if (!wantW && !wantB) return [null, null];
  if (!wantW) return [null, castTo(sum(g2, 0), bias!.dtype)];
  const ab = g2.dtype;
  const direct = writesDirectly(ab, weight!.dtype);
  const wdt = direct ? weight!.dtype : ab;
  const bdt = wantB ? (writesDirectly(ab, bias!.dtype) ? bias!.dtype : ab) : ab;
  const shape = [g2.shape[1], x2.shape[1]];
  const into = direct
    ? (accumulateInto?.ctx.takeLeafGrad(accumulateInto.index, (t) => t.dtype === wdt && t.device === g2.device && shapesEqual(t.shape, shape)) ?? null)
    : null;
  const gw = into ?? emptyTensor(shape, wdt, g2.device);
  const gb = wantB ? emptyTensor([g2.shape[1]], bdt, g2.device) : null;
  const options = { ...(gb ? { aRowSums: gb } : {}), ...(into ? { beta: 1 } : {}) };
  g2.backend.matmul(batch1(transposedView(g2)), batch1(x2), batch1(gw), gb || into ? options : undefined);
  return [into ?? castTo(gw, weight!.dtype), gb ? castTo(gb, bias!.dtype) : null];
}

function castTo(t: Tensor, dtype: DType): Tensor {
  if (t.dtype === dtype) return t;
  const c = contiguousCopy(t, dtype);
  t.dispose();
  return c;
}

/** An incoming output gradient as contiguous [rows, cols] in the output's dtype, as the products read it. */
export function gradRows(g: Tensor, dtype: DType, cols: number): Tensor {
  return contiguous(reshape(g.dtype === dtype ? g : cast(g, dtype), [-1, cols]));
}

/** out [rows, N] = a2 [rows, K] @ w^T for a weight [N, K] (no graph: for backward and fused ops). */
export function productWithWeightT(a2: Tensor, w: Tensor, options?: MatmulOptions): Tensor {
  const out = emptyTensor([a2.shape[0], w.shape[0]], a2.dtype, a2.device);
  a2.backend.matmul(batch1(a2), batch1(transposedView(w)), batch1(out), options);
  return out;
}

/** out [rows, K] = g2 [rows, N] @ w for a weight [N, K]: the input gradient of a linear layer. */
export function productWithWeight(g2: Tensor, w: Tensor, options?: MatmulOptions): Tensor {
  const out = emptyTensor([g2.shape[0], w.shape[1]], g2.dtype, g2.device);
  g2.backend.matmul(batch1(g2), batch1(w), batch1(out), options);
  return out;
}

/**
 * x @ weight^T + bias, with PyTorch's weight layout [out, in]; the bias is fused into the product.
 * Backward computes the weight gradient and the bias gradient in one product, in the parameters'
 * own dtype (fp32 under autocast).
 */
export function linear(x0: Tensor, weight0: Tensor, bias0?: Tensor | null): Tensor {
  sameDevice("linear", x0, weight0, bias0);
  const x = autocastOperand(x0);
  const w = autocastParam(weight0);
  const b = bias0 ? autocastParam(bias0) : null;
  if (w.ndim !== 2) throw new RangeError(`linear: weight must be 2-D [out, in], got ${formatShape(w.shape)}`);
  const [outF, inF] = w.shape;
  if (x.shape[x.ndim - 1] !== inF) {
    throw new RangeError(`linear: input has ${x.shape[x.ndim - 1]} features (${formatShape(x.shape)}), weight expects ${inF}`);
  }
  if (b && (b.ndim !== 1 || b.shape[0] !== outF)) {
    throw new RangeError(`linear: bias must have shape [${outF}], got ${formatShape(b.shape)}`);
  }
  if (x.dtype !== w.dtype) throw new TypeError(`linear: input is ${x.dtype} but weight is ${w.dtype}`);
  const lead = x.shape.slice(0, -1);
  const x2 = reshape(x, [-1, inF]);
  const out2 = productWithWeightT(x2, w, b ? { bias: b } : undefined);
  const out = reshape(out2, [...lead, outF]);
  out2.dispose();
  const xNeedsGrad = x.requiresGrad;
  const result = record(out, "Linear", [x2, weight0, bias0 ?? null], [x2, w], (g, [sx, sw], ctx) => {
    // A split backward's passes ([Note: the weight pass] in autograd.ts) ask for x, or for the weights.
    const g2 = gradRows(g, sx.dtype, outF);
    const [gw, gb] = linearParamGrads(g2, sx, ctx.wantsGrad(1) ? weight0 : null, ctx.wantsGrad(2) ? (bias0 ?? null) : null, { ctx, index: 1 });
    return [xNeedsGrad && ctx.wantsGrad(0) ? productWithWeight(g2, sw) : null, gw, gb];
  });
  if (x2 !== x) x2.dispose();
  return result;
}
