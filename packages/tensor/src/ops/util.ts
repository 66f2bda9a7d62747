/** Helpers shared by the op implementations: allocation, broadcasting views, graph recording. */
import type { View } from "../backend";
import type { DType } from "../dtype";
import { broadcastStrides, contiguousStrides, formatShape, numel } from "../shape";
import { StorageRef } from "../memory";
import { getBackend } from "../device";
import { Node, type BackwardFn, type Edge } from "../autograd";
import { isGradEnabled } from "../gradMode";
import { Tensor } from "../tensor";
import { MATERIALISE_HINT } from "../meta";

/** A new contiguous tensor with unspecified contents (zero on the CPU backend). */
export function emptyTensor(shape: readonly number[], dtype: DType, device: string): Tensor {
  for (const s of shape) {
    if (!Number.isInteger(s) || s < 0) throw new RangeError(`shape: invalid size ${s} in ${formatShape(shape)}`);
  }
  const backend = getBackend(device);
  const storage = backend.alloc(dtype, numel(shape));
  return new Tensor(new StorageRef(storage, backend), [...shape], contiguousStrides(shape), 0);
}

export function emptyLike(t: Tensor, dtype: DType = t.dtype): Tensor {
  return emptyTensor(t.shape, dtype, t.device);
}

/** A plain View of `t` read as if it had `shape` (broadcast dims get stride 0). */
export function broadcastView(t: Tensor, shape: readonly number[]): View {
  if (t.shape.length === shape.length && t.shape.every((s, i) => s === shape[i])) return t;
  return { storage: t.storage, shape, strides: broadcastStrides(t.shape, t.strides, shape), offset: t.offset };
}

/** A [1, M, N] view of a 2-D tensor for the batched matmul contract. */
export function batch1(t: View): View {
  return { storage: t.storage, shape: [1, t.shape[0], t.shape[1]], strides: [0, t.strides[0], t.strides[1]], offset: t.offset };
}

export function sameDevice(op: string, ...ts: (Tensor | null | undefined)[]): string {
  let device: string | null = null;
  for (const t of ts) {
    if (!t) continue;
    if (device === null) device = t.device;
    else if (t.device !== device) {
      const hint = device === "meta" || t.device === "meta" ? `: meta tensors have no data and cannot meet real ones; ${MATERIALISE_HINT}` : "";
      throw new Error(`${op}: expected all tensors on the same device, got ${device} and ${t.device}${hint}`);
    }
  }
  return device ?? "cpu";
}

export function needsGrad(...ts: (Tensor | null | undefined)[]): boolean {
  if (!isGradEnabled()) return false;
  for (const t of ts) if (t && t.requiresGrad) return true;
  return false;
}

/**
 * Records `out` as produced by `name` from `inputs`. `saved` tensors are kept alive (as aliases
 * outside every scope) until the node has run backward or the graph is released.
 */
export function record(
  out: Tensor,
  name: string,
  inputs: readonly (Tensor | null | undefined)[],
  saved: readonly Tensor[],
  backward: BackwardFn,
): Tensor {
  if (!needsGrad(...inputs)) return out;
  const edges: Edge[] = inputs.map((t) => {
    if (!t || !t.requiresGrad) return null;
    const node = t.gradNode;
    return node ? { node } : { leaf: t };
  });
  const aliases = saved.map((s) => s.viewAs(s.shape, s.strides, s.offset, false));
  out.setGradNode(new Node(name, edges, backward, aliases));
  return out;
}

export function assertFloating(op: string, t: Tensor): void {
  if (t.dtype === "int32") throw new TypeError(`${op}: expected a floating tensor, got int32 ${formatShape(t.shape)}`);
}

export function assertDtype(op: string, field: string, t: Tensor, dtype: DType): void {
  if (t.dtype !== dtype) throw new TypeError(`${op}: ${field} must be ${dtype}, got ${t.dtype}`);
}
