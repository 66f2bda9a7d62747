/** Matrix products: batched matmul with broadcasting, and linear with the bias fused into the product. */
import type { View } from "../backend";
import { autocastDType } from "../gradMode";
import { broadcastShapes, formatShape, numel, viewStrides } from "../shape";
import type { Tensor } from "../tensor";
import { batch1, emptyTensor, record, sameDevice } from "./util";
import { cast } from "./elementwise";
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
  return record(out, "MatMul", [a, b], [a, b], (g, [sa, sb]) => [
    a.requiresGrad ? sumToShape(matmul(g, transpose(sb, -1, -2)), sa.shape) : null,
    b.requiresGrad ? sumToShape(matmul(transpose(sa, -1, -2), g), sb.shape) : null,
  ]);
}

/** x @ weight^T + bias, with PyTorch's weight layout [out, in]; the bias is fused into the product. */
export function linear(x0: Tensor, weight0: Tensor, bias0?: Tensor | null): Tensor {
  sameDevice("linear", x0, weight0, bias0);
  const x = autocastOperand(x0);
  const w = autocastOperand(weight0);
  const b = bias0 ? autocastOperand(bias0) : null;
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
  const rows = x2.shape[0];
  const out2 = emptyTensor([rows, outF], x.dtype, x.device);
  const wt: View = { storage: w.storage, shape: [inF, outF], strides: [w.strides[1], w.strides[0]], offset: w.offset };
  x.backend.matmul(batch1(x2), batch1(wt), batch1(out2), b ? { bias: b } : undefined);
  const out = reshape(out2, [...lead, outF]);
  out2.dispose();
  const xNeedsGrad = x.requiresGrad;
  const result = record(out, "Linear", [x2, w, b], [x2, w], (g, [sx, sw]) => {
    const g2 = reshape(g, [-1, outF]);
    return [
      xNeedsGrad ? matmul(g2, sw) : null,
      w.requiresGrad ? matmul(transpose(g2, 0, 1), sx) : null,
      b && b.requiresGrad ? sum(g2, 0) : null,
    ];
  });
  if (x2 !== x) x2.dispose();
  return result;
}
