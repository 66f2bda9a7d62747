/**
 * Tensors in and out of a collective's shared memory: one copy each way. The CPU process group
 * copies its inputs at call time (so the caller may go on computing, as with a GPU stream) and
 * writes results into the caller's tensors in place.
 *
 * A contiguous CPU tensor is copied straight between its storage's typed array and the slot. Any
 * other tensor goes through the tensor API: a strided CPU tensor is gathered (`toHost`) and then
 * copied, and a tensor of another device (the host-staged group of DESIGN.md decision 16: CUDA
 * tensors) is read with one device-to-host transfer and written with one host-to-device upload on
 * its own device, followed by a device-side copy into place.
 */
import { fromHost, isStorageArray, noGrad, type HostArray, type Tensor } from "@fulgur/tensor";

/** Copies `t`'s elements (row-major, storage format) into `dst`, which has `t.numel` elements. */
export function readTensor(t: Tensor, dst: HostArray): void {
  const own = cpuElements(t);
  (dst as Float32Array).set((own ?? t.toHost()) as Float32Array);
}

/** Writes `src` (row-major, storage format, `t.numel` elements) into `t` in place. */
export function writeTensor(t: Tensor, src: HostArray): void {
  const own = cpuElements(t);
  if (own) {
    (own as Float32Array).set(src as Float32Array);
    // The memory changed outside the tensor API: values derived from it must be recomputed.
    t.markModified();
    return;
  }
  noGrad(() => {
    const staged = fromHost(src, t.shape, t.dtype, { device: t.device });
    try {
      t.copy_(staged);
    } finally {
      staged.dispose();
    }
  });
}

/**
 * The live elements of a contiguous CPU tensor, without a copy, or undefined. The CPU backend's
 * storage keeps its elements in `data` in storage format; anything else takes the general path.
 */
function cpuElements(t: Tensor): HostArray | undefined {
  if (t.device !== "cpu" || !t.isContiguous()) return undefined;
  const data = (t.storage as { data?: unknown }).data;
  if (!ArrayBuffer.isView(data) || !isStorageArray(data as HostArray, t.dtype)) return undefined;
  return (data as HostArray).subarray(t.offset, t.offset + t.numel);
}
