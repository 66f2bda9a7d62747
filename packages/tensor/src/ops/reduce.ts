/** Reductions (sum, mean, max, min, argmax) over any set of dims, forward and backward. */
import type { ReduceOp } from "../backend";
import { formatShape, normDim, numel, shapesEqual } from "../shape";
import type { Tensor } from "../tensor";
import { emptyTensor, record } from "./util";
import { expand, reshape } from "./views";
import { cast, compare, div, mul } from "./elementwise";

function normDims(x: Tensor, dims: number | readonly number[] | undefined, op: string): number[] {
  if (dims === undefined) return x.shape.map((_, i) => i);
  const list = typeof dims === "number" ? [dims] : [...dims];
  const out = [...new Set(list.map((d) => normDim(d, x.ndim, op)))];
  return out.sort((a, b) => a - b);
}

function keptShape(shape: readonly number[], dims: readonly number[]): number[] {
  return shape.map((s, i) => (dims.includes(i) ? 1 : s));
}

function reduceRaw(op: ReduceOp, x: Tensor, dims: readonly number[]): Tensor {
  const out = emptyTensor(keptShape(x.shape, dims), op === "argmax" ? "int32" : x.dtype, x.device);
  if (x.numel === 0 && op !== "sum") throw new RangeError(`${op}: cannot reduce an empty tensor ${formatShape(x.shape)}`);
  x.backend.reduce(op, x, out);
  return out;
}

function finish(out: Tensor, x: Tensor, dims: readonly number[], keepDim: boolean): Tensor {
  if (keepDim) return out;
  return reshape(out, x.shape.filter((_, i) => !dims.includes(i)));
}

/** Sums `g` down to `shape` (undoing broadcasting). */
export function sumToShape(g: Tensor, shape: readonly number[]): Tensor {
  if (shapesEqual(g.shape, shape)) return g;
  const lead = g.ndim - shape.length;
  const dims: number[] = [];
  for (let i = 0; i < g.ndim; i++) {
    if (i < lead || (shape[i - lead] === 1 && g.shape[i] !== 1)) dims.push(i);
  }
  const r = dims.length ? reduceRaw("sum", g, dims) : g;
  return reshape(r, shape);
}

export function sum(x: Tensor, dims?: number | readonly number[], keepDim = false): Tensor {
  const d = normDims(x, dims, "sum");
  const kept = keptShape(x.shape, d);
  const out = record(reduceRaw("sum", x, d), "Sum", [x], [], (g) => [expand(reshape(g, kept), x.shape)]);
  return finish(out, x, d, keepDim);
}

export function mean(x: Tensor, dims?: number | readonly number[], keepDim = false): Tensor {
  const d = normDims(x, dims, "mean");
  const count = numel(d.map((i) => x.shape[i]));
  return mul(sum(x, d, keepDim), 1 / count);
}

function extremum(op: "max" | "min", x: Tensor, dims: number | readonly number[] | undefined, keepDim: boolean): Tensor {
  const d = normDims(x, dims, op);
  const kept = keptShape(x.shape, d);
  const y = reduceRaw(op, x, d);
  const out = record(y, op === "max" ? "Max" : "Min", [x], [x, y], (g, [sx, sy]) => {
    // The gradient is shared evenly among tied extrema (PyTorch's amax/amin rule).
    const mask = compare("eq", sx, expand(sy, sx.shape));
    const count = reduceRaw("sum", mask, d);
    const share = div(reshape(g, kept), count);
    return [mul(mask, expand(share, sx.shape))];
  });
  return finish(out, x, d, keepDim);
}

export const max = (x: Tensor, dims?: number | readonly number[], keepDim = false): Tensor => extremum("max", x, dims, keepDim);
export const min = (x: Tensor, dims?: number | readonly number[], keepDim = false): Tensor => extremum("min", x, dims, keepDim);

export function argmax(x: Tensor, dim: number, keepDim = false): Tensor {
  const d = [normDim(dim, x.ndim, "argmax")];
  return finish(reduceRaw("argmax", x, d), x, d, keepDim);
}

/** Sum of squares of every element, in float32 or wider: the building block of gradient norms. */
export function sumOfSquares(x: Tensor): Tensor {
  const xf = x.dtype === "bfloat16" || x.dtype === "float16" ? cast(x, "float32") : x;
  const sq = mul(xf, xf);
  const r = reduceRaw("sum", sq, sq.shape.map((_, i) => i));
  sq.dispose();
  if (xf !== x) xf.dispose();
  return reshape(r, []);
}
