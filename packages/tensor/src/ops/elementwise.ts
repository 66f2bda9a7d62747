/** Elementwise ops with broadcasting, casts and device moves, forward and backward. */
import type { BinaryOp, UnaryOp } from "../backend";
import { type DType, isFloating, promote } from "../dtype";
import { broadcastShapes, shapesEqual } from "../shape";
import { getBackend, normalizeDevice } from "../device";
import { StorageRef } from "../memory";
import { Tensor } from "../tensor";
import { metaHasNoData } from "../meta";
import { contiguousStrides } from "../shape";
import { broadcastView, emptyLike, emptyTensor, record, sameDevice } from "./util";
import { sumToShape } from "./reduce";

// ---- casts and copies -----------------------------------------------------------------------

/** A contiguous copy without autograd. */
export function contiguousCopy(x: Tensor, dtype: DType = x.dtype): Tensor {
  const out = emptyLike(x, dtype);
  x.backend.copy(x, out);
  return out;
}

export function cast(x: Tensor, dtype: DType): Tensor {
  if (x.dtype === dtype) return x;
  const out = contiguousCopy(x, dtype);
  if (!isFloating(dtype)) return out;
  return record(out, "Cast", [x], [], (g) => [cast(g, x.dtype)]);
}

export function to(x: Tensor, target: DType | string): Tensor {
  if (["float32", "float64", "bfloat16", "float16", "int32"].includes(target)) return cast(x, target as DType);
  const device = normalizeDevice(target);
  if (device === x.device) return x;
  if (x.device === "meta") throw metaHasNoData(`copying a meta tensor to ${device}`);
  const backend = getBackend(device);
  // The source is only read: a host tensor's memory goes to the device without a copy first.
  const host = x.backend.readShared && x.isContiguous() ? x.backend.readShared(x) : x.toHost();
  const out = new Tensor(new StorageRef(backend.fromHost(host, x.dtype), backend), [...x.shape], contiguousStrides(x.shape), 0);
  const from = x.device;
  return record(out, "ToDevice", [x], [], (g) => [to(g, from)]);
}

/** dst[...] = src broadcast and cast; no autograd (in-place). */
export function copyInto(src: Tensor, dst: Tensor): void {
  // A device tensor into a host tensor of its shape and dtype: straight into the host memory.
  if (src.device !== dst.device && src.backend.readInto && dst.backend.readShared && src.dtype === dst.dtype && shapesEqual(src.shape, dst.shape) && dst.isContiguous()) {
    src.backend.readInto(src, dst.backend.readShared(dst));
    return;
  }
  const s = src.device === dst.device ? src : to(src, dst.device);
  dst.backend.copy(broadcastView(s, dst.shape), dst);
  if (s !== src) s.dispose();
}

/** dst += alpha * other, in place. */
export function addInto(dst: Tensor, other: Tensor | number, alpha = 1): void {
  if (typeof other === "number") {
    dst.backend.unary("add_scalar", dst, dst, other * alpha);
    return;
  }
  sameDevice("add_", dst, other);
  let o = other;
  if (alpha !== 1) o = unaryRaw("mul_scalar", other, alpha);
  if (o.dtype !== dst.dtype) {
    const c = contiguousCopy(o, dst.dtype);
    if (o !== other) o.dispose();
    o = c;
  }
  dst.backend.binary("add", dst, broadcastView(o, dst.shape), dst);
  if (o !== other) o.dispose();
}

export function mulInto(dst: Tensor, other: Tensor | number): void {
  if (typeof other === "number") {
    dst.backend.unary("mul_scalar", dst, dst, other);
    return;
  }
  sameDevice("mul_", dst, other);
  const o = other.dtype === dst.dtype ? other : contiguousCopy(other, dst.dtype);
  dst.backend.binary("mul", dst, broadcastView(o, dst.shape), dst);
  if (o !== other) o.dispose();
}

// ---- unary ----------------------------------------------------------------------------------

function unaryRaw(op: UnaryOp, x: Tensor, scalar?: number): Tensor {
  const out = emptyLike(x);
  x.backend.unary(op, x, out, scalar);
  return out;
}

/**
 * What backward needs: the input ("x"), the output ("y") or nothing. Saving only that keeps, say,
 * `x * 2` from holding its input alive until backward.
 */
type Saves = "x" | "y" | "none";

function unary(op: UnaryOp, name: string, x: Tensor, saves: Saves, grad: (g: Tensor, saved: Tensor) => Tensor, scalar?: number): Tensor {
  const y = unaryRaw(op, x, scalar);
  const saved = saves === "x" ? [x] : saves === "y" ? [y] : [];
  return record(y, name, [x], saved, (g, s) => [grad(g, s[0])]);
}

export const neg = (x: Tensor): Tensor => unary("neg", "Neg", x, "none", (g) => neg(g));
export const exp = (x: Tensor): Tensor => unary("exp", "Exp", x, "y", (g, y) => mul(g, y));
export const log = (x: Tensor): Tensor => unary("log", "Log", x, "x", (g, x) => div(g, x));
export const sqrt = (x: Tensor): Tensor => unary("sqrt", "Sqrt", x, "y", (g, y) => div(mul(g, 0.5), y));
export const rsqrt = (x: Tensor): Tensor =>
  unary("rsqrt", "Rsqrt", x, "y", (g, y) => mul(mul(g, -0.5), mul(y, mul(y, y))));
export const tanh = (x: Tensor): Tensor => unary("tanh", "Tanh", x, "y", (g, y) => mul(g, rsubScalar(1, square(y))));
export const gelu = (x: Tensor): Tensor => unary("gelu", "Gelu", x, "x", (g, x) => binaryRaw("gelu_backward", x, g));
export const relu = (x: Tensor): Tensor => unary("relu", "Relu", x, "x", (g, x) => binaryRaw("relu_backward", x, g));
export const sigmoid = (x: Tensor): Tensor =>
  unary("sigmoid", "Sigmoid", x, "y", (g, y) => mul(g, mul(y, rsubScalar(1, y))));
export const abs = (x: Tensor): Tensor =>
  unary("abs", "Abs", x, "x", (g, x) => mul(g, sub(compare("gt", x, 0), compare("lt", x, 0))));
export const square = (x: Tensor): Tensor => unary("square", "Square", x, "x", (g, x) => mul(g, mul(x, 2)));
export const reciprocal = (x: Tensor): Tensor =>
  unary("reciprocal", "Reciprocal", x, "y", (g, y) => neg(mul(g, square(y))));

function addScalar(x: Tensor, s: number): Tensor {
  return unary("add_scalar", "AddScalar", x, "none", (g) => g, s);
}
function mulScalar(x: Tensor, s: number): Tensor {
  return unary("mul_scalar", "MulScalar", x, "none", (g) => mulScalar(g, s), s);
}
function powScalar(x: Tensor, s: number): Tensor {
  return unary("pow_scalar", "PowScalar", x, "x", (g, x) => mul(g, mulScalar(powScalar(x, s - 1), s)), s);
}
export function rsubScalar(s: number, x: Tensor): Tensor {
  return unary("rsub_scalar", "RsubScalar", x, "none", (g) => neg(g), s);
}

// ---- binary ---------------------------------------------------------------------------------

/** a op b with broadcasting and dtype promotion, no autograd. */
export function binaryRaw(op: BinaryOp, a: Tensor, b: Tensor, outDtype?: DType): Tensor {
  const device = sameDevice(op, a, b);
  const shape = broadcastShapes(a.shape, b.shape, op);
  const dtype = promote(a.dtype, b.dtype);
  // Floating operands of different dtypes go to the backend as they are (the contract converts each
  // to the promoted dtype on load), so a float32 residual plus a bf16 branch is one pass, not two.
  const mixedOk = isFloating(a.dtype) && isFloating(b.dtype);
  const ac = a.dtype === dtype || mixedOk ? a : contiguousCopy(a, dtype);
  const bc = b.dtype === dtype || mixedOk ? b : contiguousCopy(b, dtype);
  const out = emptyTensor(shape, outDtype ?? dtype, device);
  out.backend.binary(op, broadcastView(ac, shape), broadcastView(bc, shape), out);
  if (ac !== a) ac.dispose();
  if (bc !== b) bc.dispose();
  return out;
}

function reduceGrad(g: Tensor, like: Tensor): Tensor {
  const r = shapesEqual(g.shape, like.shape) ? g : sumToShape(g, like.shape);
  return r.dtype === like.dtype ? r : cast(r, like.dtype);
}

function scalarLike(x: Tensor, v: number): Tensor {
  return full([], v, x.dtype, x.device);
}

function full(shape: readonly number[], value: number, dtype: DType, device: string): Tensor {
  const t = emptyTensor(shape, dtype, device);
  t.backend.fill(t, value);
  return t;
}

export function add(a: Tensor, b: Tensor | number): Tensor {
  if (typeof b === "number") return addScalar(a, b);
  const y = binaryRaw("add", a, b);
  return record(y, "Add", [a, b], [], (g) => [reduceGrad(g, a), reduceGrad(g, b)]);
}

export function sub(a: Tensor, b: Tensor | number): Tensor {
  if (typeof b === "number") return addScalar(a, -b);
  const y = binaryRaw("sub", a, b);
  return record(y, "Sub", [a, b], [], (g) => [reduceGrad(g, a), b.requiresGrad ? reduceGrad(neg(g), b) : null]);
}

export function mul(a: Tensor, b: Tensor | number): Tensor {
  if (typeof b === "number") return mulScalar(a, b);
  const y = binaryRaw("mul", a, b);
  return record(y, "Mul", [a, b], [a, b], (g, [sa, sb]) => [
    a.requiresGrad ? reduceGrad(mul(g, sb), sa) : null,
    b.requiresGrad ? reduceGrad(mul(g, sa), sb) : null,
  ]);
}

export function div(a: Tensor, b: Tensor | number): Tensor {
  if (typeof b === "number") return mulScalar(a, 1 / b);
  const y = binaryRaw("div", a, b);
  return record(y, "Div", [a, b], [a, b], (g, [sa, sb]) => [
    reduceGrad(div(g, sb), sa),
    b.requiresGrad ? reduceGrad(neg(div(mul(g, sa), square(sb))), sb) : null,
  ]);
}

export function pow(a: Tensor, b: Tensor | number): Tensor {
  if (typeof b === "number") return powScalar(a, b);
  const y = binaryRaw("pow", a, b);
  return record(y, "Pow", [a, b], [a, b, y], (g, [sa, sb, sy]) => [
    reduceGrad(mul(g, mul(sb, pow(sa, sub(sb, 1)))), sa),
    b.requiresGrad ? reduceGrad(mul(g, mul(sy, log(sa))), sb) : null,
  ]);
}

export function maximum(a: Tensor, b: Tensor): Tensor {
  const y = binaryRaw("maximum", a, b);
  return record(y, "Maximum", [a, b], [a, b], (g, [sa, sb]) => {
    // Ties split the gradient evenly, as PyTorch does.
    const gt = compare("gt", sa, sb);
    const eq = mul(compare("eq", sa, sb), 0.5);
    const wa = add(gt, eq);
    return [reduceGrad(mul(g, wa), sa), reduceGrad(mul(g, rsubScalar(1, wa)), sb)];
  });
}

export function minimum(a: Tensor, b: Tensor): Tensor {
  const y = binaryRaw("minimum", a, b);
  return record(y, "Minimum", [a, b], [a, b], (g, [sa, sb]) => {
    const lt = compare("lt", sa, sb);
    const eq = mul(compare("eq", sa, sb), 0.5);
    const wa = add(lt, eq);
    return [reduceGrad(mul(g, wa), sa), reduceGrad(mul(g, rsubScalar(1, wa)), sb)];
  });
}

/** Elementwise comparison: 1 where true, 0 where false, in the promoted dtype. Not differentiable. */
export function compare(op: "eq" | "ne" | "lt" | "le" | "gt" | "ge", a: Tensor, b: Tensor | number): Tensor {
  const bt = typeof b === "number" ? scalarLike(a, b) : b;
  const out = binaryRaw(op, a, bt);
  if (bt !== b) bt.dispose();
  return out;
}

/** cond != 0 ? a : b, broadcasting all three. */
export function where(cond: Tensor, a: Tensor | number, b: Tensor | number): Tensor {
  const ref = typeof a !== "number" ? a : typeof b !== "number" ? b : cond;
  const dtype =
    typeof a !== "number" && typeof b !== "number" ? promote(a.dtype, b.dtype) : isFloating(ref.dtype) ? ref.dtype : "float32";
  const device = ref.device;
  const temps: Tensor[] = [];
  const operand = (v: Tensor | number): Tensor => {
    const t = typeof v === "number" ? full([], v, dtype, device) : v.dtype === dtype ? v : contiguousCopy(v, dtype);
    if (t !== v) temps.push(t);
    return t;
  };
  const ac = operand(a);
  const bc = operand(b);
  sameDevice("where", cond, ac, bc);
  const shape = broadcastShapes(broadcastShapes(cond.shape, ac.shape, "where"), bc.shape, "where");
  const out = emptyTensor(shape, dtype, device);
  out.backend.where(broadcastView(cond, shape), broadcastView(ac, shape), broadcastView(bc, shape), out);
  for (const t of temps) t.dispose();
  const ta = typeof a === "number" ? null : a;
  const tb = typeof b === "number" ? null : b;
  return record(out, "Where", [null, ta, tb], [cond], (g, [c]) => [
    null,
    ta ? reduceGrad(where(c, g, 0), ta) : null,
    tb ? reduceGrad(where(c, 0, g), tb) : null,
  ]);
}

export function maskedFill(x: Tensor, mask: Tensor, value: number): Tensor {
  return where(mask, value, x);
}
