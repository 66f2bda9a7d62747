/**
 * Shape and stride arithmetic done on the host before a launch, so kernels index as little as
 * possible: broadcasting a view to an output shape, merging dims that are contiguous across every
 * operand (a contiguous tensor becomes one dim and needs no index math at all), and reducing a view
 * to "rows with a stride, contiguous along the row" for the row-wise kernels.
 */
import type { View } from "@fulgur/tensor";

export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const s of shape) n *= s;
  return n;
}

export function contiguousStrides(shape: readonly number[]): number[] {
  const out = new Array<number>(shape.length);
  for (let i = shape.length - 1, s = 1; i >= 0; i--) {
    out[i] = s;
    s *= shape[i];
  }
  return out;
}

export function isContiguous(shape: readonly number[], strides: readonly number[]): boolean {
  for (let i = shape.length - 1, s = 1; i >= 0; i--) {
    if (shape[i] !== 1 && strides[i] !== s) return false;
    s *= shape[i];
  }
  return true;
}

/** Strides reading `view` as `shape` (numpy broadcasting: size-1 or missing leading dims get stride 0). */
export function stridesFor(view: View, shape: readonly number[]): number[] {
  const vs = view.shape;
  const out = new Array<number>(shape.length).fill(0);
  const off = shape.length - vs.length;
  if (off < 0) throw new RangeError(`cannot broadcast [${vs.join(", ")}] to [${shape.join(", ")}]`);
  for (let i = 0; i < vs.length; i++) {
    if (vs[i] === shape[i + off]) out[i + off] = vs[i] === 1 ? 0 : view.strides[i];
    else if (vs[i] !== 1) throw new RangeError(`cannot broadcast [${vs.join(", ")}] to [${shape.join(", ")}]`);
  }
  return out;
}

export interface Coalesced {
  readonly shape: number[];
  /** strides[k] are operand k's strides over `shape`. */
  readonly strides: number[][];
  /** Every operand is contiguous over the whole shape: kernels can use the linear index directly. */
  readonly contiguous: boolean;
}

/**
 * Drops size-1 dims and merges neighbours that are contiguous with each other in every operand
 * (outer stride = inner stride * inner size). The element order is unchanged.
 */
export function coalesce(shape: readonly number[], strides: readonly (readonly number[])[]): Coalesced {
  const cShape: number[] = [];
  const cStrides: number[][] = strides.map(() => []);
  for (let d = 0; d < shape.length; d++) {
    const size = shape[d];
    if (size === 1) continue;
    const m = cShape.length - 1;
    let merge = m >= 0;
    for (let k = 0; k < strides.length && merge; k++) if (cStrides[k][m] !== strides[k][d] * size) merge = false;
    if (merge) {
      cShape[m] *= size;
      for (let k = 0; k < strides.length; k++) cStrides[k][m] = strides[k][d];
    } else {
      cShape.push(size);
      for (let k = 0; k < strides.length; k++) cStrides[k].push(strides[k][d]);
    }
  }
  const contiguous = cShape.length === 0 || (cShape.length === 1 && cStrides.every((s) => s[0] === 1));
  return { shape: cShape, strides: cStrides, contiguous };
}

/**
 * A view as `rows` rows of `cols` elements, element j of row r at offset r * rowStride + j, or null
 * when its layout is not that simple (then the caller copies it to a contiguous temporary).
 */
export function rowsOf(view: View): { rows: number; cols: number; rowStride: number } | null {
  const nd = view.shape.length;
  const cols = nd === 0 ? 1 : view.shape[nd - 1];
  if (nd > 0 && cols !== 1 && view.strides[nd - 1] !== 1) return null;
  const outer = coalesce(view.shape.slice(0, Math.max(0, nd - 1)), [view.strides.slice(0, Math.max(0, nd - 1))]);
  const rows = numelOf(outer.shape);
  if (outer.shape.length === 0) return { rows, cols, rowStride: cols };
  if (outer.shape.length === 1) return { rows, cols, rowStride: outer.strides[0][0] };
  return null;
}
