/**
 * View ops: new Tensor objects over the same storage with other shapes and strides. No data is
 * copied (reshape copies only when no view is possible, as in PyTorch). Each is differentiable.
 */
import { contiguousStrides, formatShape, inferShape, normDim, numel, viewStrides } from "../shape";
import type { Tensor } from "../tensor";
import { emptyTensor, record } from "./util";
import { contiguousCopy, copyInto } from "./elementwise";
import { sumToShape } from "./reduce";

function viewOf(x: Tensor, name: string, shape: readonly number[], strides: readonly number[], offset: number, back: (g: Tensor) => Tensor): Tensor {
  return record(x.viewAs(shape, strides, offset), name, [x], [], (g) => [back(g)]);
}

export function view(x: Tensor, shape: readonly number[]): Tensor {
  const target = inferShape(shape, x.numel, "view");
  const strides = viewStrides(x.shape, x.strides, target);
  if (!strides) {
    throw new Error(
      `view: shape ${formatShape(target)} is not compatible with the layout of ${formatShape(x.shape)} (strides ${formatShape(x.strides)}); use reshape() or contiguous() first`,
    );
  }
  return viewOf(x, "View", target, strides, x.offset, (g) => reshape(g, x.shape));
}

export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const target = inferShape(shape, x.numel, "reshape");
  const strides = viewStrides(x.shape, x.strides, target);
  if (strides) return viewOf(x, "Reshape", target, strides, x.offset, (g) => reshape(g, x.shape));
  const c = contiguous(x);
  const out = viewOf(c, "Reshape", target, contiguousStrides(target), c.offset, (g) => reshape(g, c.shape));
  c.dispose();
  return out;
}

export function contiguous(x: Tensor): Tensor {
  if (x.isContiguous()) return x;
  return record(contiguousCopy(x), "Contiguous", [x], [], (g) => [g]);
}

export function clone(x: Tensor): Tensor {
  return record(contiguousCopy(x), "Clone", [x], [], (g) => [g]);
}

export function transpose(x: Tensor, d0: number, d1: number): Tensor {
  const a = normDim(d0, x.ndim, "transpose");
  const b = normDim(d1, x.ndim, "transpose");
  const shape = [...x.shape];
  const strides = [...x.strides];
  [shape[a], shape[b]] = [shape[b], shape[a]];
  [strides[a], strides[b]] = [strides[b], strides[a]];
  return viewOf(x, "Transpose", shape, strides, x.offset, (g) => transpose(g, a, b));
}

export function permute(x: Tensor, dims: readonly number[]): Tensor {
  if (dims.length !== x.ndim) {
    throw new RangeError(`permute: got ${dims.length} dims ${formatShape(dims)} for a tensor of ${x.ndim} dimensions`);
  }
  const d = dims.map((v) => normDim(v, x.ndim, "permute"));
  if (new Set(d).size !== d.length) throw new RangeError(`permute: repeated dimension in ${formatShape(dims)}`);
  const inverse = new Array<number>(d.length);
  d.forEach((v, i) => (inverse[v] = i));
  return viewOf(
    x,
    "Permute",
    d.map((i) => x.shape[i]),
    d.map((i) => x.strides[i]),
    x.offset,
    (g) => permute(g, inverse),
  );
}

/** Rows start..end (exclusive) of dim; negative indices count from the end. */
export function slice(x: Tensor, dim: number, start: number, end?: number): Tensor {
  const d = normDim(dim, x.ndim, "slice");
  const n = x.shape[d];
  const s = Math.min(Math.max(start < 0 ? start + n : start, 0), n);
  const e = Math.min(Math.max(end === undefined ? n : end < 0 ? end + n : end, s), n);
  const shape = [...x.shape];
  shape[d] = e - s;
  return viewOf(x, "Slice", shape, x.strides, x.offset + s * x.strides[d], (g) => {
    const gx = emptyTensor(x.shape, g.dtype, g.device);
    gx.backend.fill(gx, 0);
    copyInto(g, slice(gx, d, s, e));
    return gx;
  });
}

export function select(x: Tensor, dim: number, index: number): Tensor {
  const d = normDim(dim, x.ndim, "select");
  const n = x.shape[d];
  const i = index < 0 ? index + n : index;
  if (i < 0 || i >= n) throw new RangeError(`select: index ${index} is out of range for dimension ${dim} of size ${n}`);
  const s = slice(x, d, i, i + 1);
  const out = squeeze(s, d);
  s.dispose();
  return out;
}

export function expand(x: Tensor, shape: readonly number[]): Tensor {
  if (shape.length < x.ndim) {
    throw new RangeError(`expand: target ${formatShape(shape)} has fewer dimensions than ${formatShape(x.shape)}`);
  }
  const off = shape.length - x.ndim;
  const target = shape.map((s, i) => (s === -1 ? x.shape[i - off] : s));
  const strides = target.map((s, i) => {
    if (i < off) return 0;
    const own = x.shape[i - off];
    if (own === s) return x.strides[i - off];
    if (own === 1) return 0;
    throw new RangeError(`expand: cannot expand ${formatShape(x.shape)} to ${formatShape(shape)}`);
  });
  if (target.every((s, i) => s === x.shape[i - off]) && off === 0) return x;
  return viewOf(x, "Expand", target, strides, x.offset, (g) => sumToShape(g, x.shape));
}

export function unsqueeze(x: Tensor, dim: number): Tensor {
  const d = normDim(dim, x.ndim + 1, "unsqueeze");
  const shape = [...x.shape];
  const strides = [...x.strides];
  shape.splice(d, 0, 1);
  strides.splice(d, 0, d < x.ndim ? x.strides[d] * x.shape[d] : 1);
  return viewOf(x, "Unsqueeze", shape, strides, x.offset, (g) => reshape(g, x.shape));
}

export function squeeze(x: Tensor, dim?: number): Tensor {
  const dims = dim === undefined ? x.shape.map((s, i) => (s === 1 ? i : -1)).filter((i) => i >= 0) : [normDim(dim, x.ndim, "squeeze")];
  const keep = x.shape.map((s, i) => !(dims.includes(i) && s === 1));
  return viewOf(
    x,
    "Squeeze",
    x.shape.filter((_, i) => keep[i]),
    x.strides.filter((_, i) => keep[i]),
    x.offset,
    (g) => reshape(g, x.shape),
  );
}

export function flatten(x: Tensor, start = 0, end = -1): Tensor {
  if (x.ndim === 0) return reshape(x, [1]);
  const s = normDim(start, x.ndim, "flatten");
  const e = normDim(end, x.ndim, "flatten");
  const shape = [...x.shape.slice(0, s), numel(x.shape.slice(s, e + 1)), ...x.shape.slice(e + 1)];
  return reshape(x, shape);
}

export function cat(tensors: readonly Tensor[], dim = 0): Tensor {
  if (tensors.length === 0) throw new RangeError("cat: expected at least one tensor");
  const first = tensors[0];
  const d = normDim(dim, first.ndim, "cat");
  let total = 0;
  for (const t of tensors) {
    if (t.ndim !== first.ndim || t.shape.some((s, i) => i !== d && s !== first.shape[i])) {
      throw new RangeError(`cat: shapes ${formatShape(first.shape)} and ${formatShape(t.shape)} differ outside dimension ${d}`);
    }
    if (t.device !== first.device) throw new Error(`cat: tensors on ${first.device} and ${t.device}`);
    total += t.shape[d];
  }
  const shape = [...first.shape];
  shape[d] = total;
  const out = emptyTensor(shape, first.dtype, first.device);
  let at = 0;
  const bounds: [number, number][] = [];
  for (const t of tensors) {
    const dst = out.viewAs(out.shape, out.strides, out.offset, false);
    const part = sliceRaw(dst, d, at, at + t.shape[d]);
    copyInto(t, part);
    part.dispose();
    dst.dispose();
    bounds.push([at, at + t.shape[d]]);
    at += t.shape[d];
  }
  return record(out, "Cat", tensors, [], (g) => bounds.map(([s, e]) => slice(g, d, s, e)));
}

function sliceRaw(x: Tensor, d: number, s: number, e: number): Tensor {
  const shape = [...x.shape];
  shape[d] = e - s;
  return x.viewAs(shape, x.strides, x.offset + s * x.strides[d], false);
}

export function split(x: Tensor, sizes: number | readonly number[], dim = 0): Tensor[] {
  const d = normDim(dim, x.ndim, "split");
  const n = x.shape[d];
  const parts: number[] = [];
  if (typeof sizes === "number") {
    if (!Number.isInteger(sizes) || sizes <= 0) throw new RangeError(`split: size must be a positive integer, got ${sizes}`);
    for (let i = 0; i < n; i += sizes) parts.push(Math.min(sizes, n - i));
  } else {
    if (sizes.reduce((a, b) => a + b, 0) !== n) {
      throw new RangeError(`split: sizes ${formatShape(sizes)} do not add up to ${n}, the size of dimension ${d}`);
    }
    parts.push(...sizes);
  }
  let at = 0;
  return parts.map((p) => {
    const s = slice(x, d, at, at + p);
    at += p;
    return s;
  });
}

export function stack(tensors: readonly Tensor[], dim = 0): Tensor {
  if (tensors.length === 0) throw new RangeError("stack: expected at least one tensor");
  const d = normDim(dim, tensors[0].ndim + 1, "stack");
  const parts = tensors.map((t) => unsqueeze(t, d));
  const out = cat(parts, d);
  for (const p of parts) p.dispose();
  return out;
}
