/**
 * CPU storage: a host typed array in storage format (16-bit floats as raw bits in a Uint16Array).
 * Kernels reach the array through `dataOf`, which is also where use-after-free and
 * wrong-backend bugs are caught: both are cheap to check once per op and expensive to debug later.
 */
import type { Backend, Storage, View } from "../backend";
import type { DType, HostArray } from "../dtype";
import { allocHost, itemsize } from "../dtype";

export class CpuStorage implements Storage {
  readonly byteLength: number;
  private array: HostArray;
  private released = false;

  constructor(
    readonly backend: Backend,
    readonly dtype: DType,
    readonly length: number,
    data: HostArray,
  ) {
    this.byteLength = length * itemsize(dtype);
    this.array = data;
  }

  /** The elements in storage format (16-bit floats as raw bits). */
  get data(): HostArray {
    return this.array;
  }

  /** True once `CpuBackend.free` released it; kernels refuse freed storages. */
  get freed(): boolean {
    return this.released;
  }

  /**
   * Marks the storage freed and drops its array at once, so memory returns to the heap even while
   * a stale view still references the storage object.
   */
  release(): void {
    this.released = true;
    this.array = allocHost(this.dtype, 0);
  }
}

/** The host array behind a view, after checking the storage belongs to the CPU and is still live. */
export function dataOf(view: View): HostArray {
  const s = view.storage;
  if (!(s instanceof CpuStorage)) {
    throw new TypeError(`cpu backend: got a storage of backend "${s.backend.name}"; move the tensor to the cpu first`);
  }
  if (s.freed) throw new Error("cpu backend: use of a storage after it was freed");
  return s.data;
}
