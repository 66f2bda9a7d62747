/** Shape and stride arithmetic shared by every backend and by the view ops. */

export type Shape = readonly number[];

export function numel(shape: Shape): number {
  let n = 1;
  for (const s of shape) n *= s;
  return n;
}

export function contiguousStrides(shape: Shape): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i];
  }
  return strides;
}

export function isContiguous(shape: Shape, strides: readonly number[]): boolean {
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] !== 1 && strides[i] !== s) return false;
    s *= shape[i];
  }
  return true;
}

export function shapesEqual(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}

export function formatShape(shape: Shape): string {
  return `[${shape.join(", ")}]`;
}

/** Normalises a possibly negative dimension index, with an error naming the op. */
export function normDim(dim: number, ndim: number, op = "dim"): number {
  const d = dim < 0 ? dim + ndim : dim;
  if (!Number.isInteger(d) || d < 0 || d >= Math.max(ndim, 1)) {
    throw new RangeError(`${op}: dimension ${dim} is out of range for a tensor of ${ndim} dimensions`);
  }
  return d;
}

export function broadcastShapes(a: Shape, b: Shape, op = "broadcast"): number[] {
  const n = Math.max(a.length, b.length);
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) {
      throw new RangeError(`${op}: shapes ${formatShape(a)} and ${formatShape(b)} cannot be broadcast together`);
    }
    out[i] = x === 1 ? y : x;
  }
  return out;
}

/** Strides that read a tensor of `shape`/`strides` as if it had `target` shape (stride 0 on broadcast dims). */
export function broadcastStrides(shape: Shape, strides: readonly number[], target: Shape): number[] {
  const out = new Array<number>(target.length).fill(0);
  const off = target.length - shape.length;
  for (let i = 0; i < shape.length; i++) {
    if (shape[i] === target[i + off]) out[i + off] = strides[i];
    else if (shape[i] !== 1) throw new RangeError(`cannot expand ${formatShape(shape)} to ${formatShape(target)}`);
  }
  return out;
}

/** Resolves a reshape target with at most one -1. */
export function inferShape(target: readonly number[], total: number, op = "reshape"): number[] {
  let unknown = -1;
  let known = 1;
  target.forEach((s, i) => {
    if (s === -1) {
      if (unknown >= 0) throw new RangeError(`${op}: only one dimension can be -1, got ${formatShape(target)}`);
      unknown = i;
    } else if (!Number.isInteger(s) || s < 0) {
      throw new RangeError(`${op}: invalid size ${s} in ${formatShape(target)}`);
    } else known *= s;
  });
  const out = [...target];
  if (unknown >= 0) {
    if (known === 0 || total % known !== 0) {
      throw new RangeError(`${op}: cannot infer -1 in ${formatShape(target)} for ${total} elements`);
    }
    out[unknown] = total / known;
  } else if (known !== total) {
    throw new RangeError(`${op}: shape ${formatShape(target)} is invalid for ${total} elements`);
  }
  return out;
}

/**
 * Strides for viewing (shape, strides) as `target` without a copy, or null when the memory layout
 * does not allow it (PyTorch's view rule: merged dims must be contiguous with each other).
 */
export function viewStrides(shape: Shape, strides: readonly number[], target: Shape): number[] | null {
  if (isContiguous(shape, strides)) return contiguousStrides(target);
  // Walk chunks of old dims that are mutually contiguous and map them onto target dims.
  const newStrides = new Array<number>(target.length).fill(0);
  let viewD = target.length - 1;
  let chunkBase = strides[strides.length - 1] ?? 1;
  let tensorNumel = 1;
  let viewNumel = 1;
  for (let d = shape.length - 1; d >= 0; d--) {
    tensorNumel *= shape[d];
    if (d === 0 || (shape[d - 1] !== 1 && strides[d - 1] !== tensorNumel * chunkBase)) {
      while (viewD >= 0 && (viewNumel < tensorNumel || target[viewD] === 1)) {
        newStrides[viewD] = viewNumel * chunkBase;
        viewNumel *= target[viewD];
        viewD--;
      }
      if (viewNumel !== tensorNumel) return null;
      if (d > 0) {
        chunkBase = strides[d - 1];
        tensorNumel = 1;
        viewNumel = 1;
      }
    }
  }
  if (viewD !== -1) return null;
  return newStrides;
}
