/**
 * Loading compiled kernels into the device and launching them. cuLaunchKernel takes an array of
 * pointers, one per kernel parameter, each pointing at that parameter's bytes; `ArgPack` builds both
 * in one native scratch block (allocated once), so a launch allocates nothing. Launches are
 * synchronous calls on the JavaScript thread and the driver copies the parameters during the call,
 * so the one scratch block is reused by every launch.
 *
 * Struct parameters (Shape8, Strides8, AttnTensor) are written with the C layout their .cu files
 * declare: 8-byte fields first, naturally aligned, no hidden padding.
 */
import koffi from "koffi";
import { check } from "./check";
import type { Ptr } from "./ffi/cudart";
import { CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, ensureDriverInitialised } from "./ffi/driver";
import { probeStarvation } from "./launchStarvation";
import { traceLaunch } from "./launchTrace";
import type { Stream } from "./stream";

const SCRATCH_BYTES = 16384;
const MAX_PARAMS = 64;
const VALUE_BASE = MAX_PARAMS * 8;
export const MAX_DIMS = 8;

export class ArgPack {
  private static scratch: { ptr: Ptr; view: DataView } | null = null;
  private count = 0;
  private off = VALUE_BASE;

  private static native(): { ptr: Ptr; view: DataView } {
    if (ArgPack.scratch === null) {
      const ptr = koffi.alloc("uint8_t", SCRATCH_BYTES) as Ptr;
      ArgPack.scratch = { ptr, view: new DataView(koffi.view(ptr, SCRATCH_BYTES)) };
    }
    return ArgPack.scratch;
  }

  /** Starts a new parameter list (the previous launch has copied its own). */
  static begin(): ArgPack {
    const a = shared;
    a.count = 0;
    a.off = VALUE_BASE;
    return a;
  }

  get params(): Ptr {
    return ArgPack.native().ptr;
  }

  get length(): number {
    return this.count;
  }

  private slot(size: number, align: number): { view: DataView; off: number } {
    const n = ArgPack.native();
    const off = Math.ceil(this.off / align) * align;
    if (this.count >= MAX_PARAMS || off + size > SCRATCH_BYTES) {
      throw new RangeError(`kernel parameters exceed the launch scratch (${MAX_PARAMS} params, ${SCRATCH_BYTES} bytes)`);
    }
    n.view.setBigUint64(this.count * 8, n.ptr + BigInt(off), true);
    this.count++;
    this.off = off + size;
    return { view: n.view, off };
  }

  ptr(p: Ptr | null): this {
    const s = this.slot(8, 8);
    s.view.setBigUint64(s.off, p ?? 0n, true);
    return this;
  }

  i32(v: number): this {
    const s = this.slot(4, 4);
    s.view.setInt32(s.off, v, true);
    return this;
  }

  u32(v: number): this {
    const s = this.slot(4, 4);
    s.view.setUint32(s.off, v >>> 0, true);
    return this;
  }

  f32(v: number): this {
    const s = this.slot(4, 4);
    s.view.setFloat32(s.off, v, true);
    return this;
  }

  f64(v: number): this {
    const s = this.slot(8, 8);
    s.view.setFloat64(s.off, v, true);
    return this;
  }

  i64(v: number | bigint): this {
    const s = this.slot(8, 8);
    s.view.setBigInt64(s.off, BigInt(v), true);
    return this;
  }

  u64(v: number | bigint): this {
    const s = this.slot(8, 8);
    s.view.setBigUint64(s.off, BigInt.asUintN(64, BigInt(v)), true);
    return this;
  }

  /** A row operand as the row-wise kernels take it: pointer, dtype code, row stride (elements). */
  rows(r: { readonly ptr: Ptr; readonly code: number; readonly rowStride: number }): this {
    return this.ptr(r.ptr).i32(r.code).i64(r.rowStride);
  }

  /** A vector operand, or null (a null pointer): pointer, dtype code, element stride. */
  vec(v: { readonly ptr: Ptr; readonly code: number; readonly stride: number } | null): this {
    return this.ptr(v ? v.ptr : null).i32(v ? v.code : 0).i64(v ? v.stride : 0);
  }

  /** struct Shape8 { long long d[8]; int ndim; int pad; } (72 bytes). */
  shape8(dims: readonly number[]): this {
    if (dims.length > MAX_DIMS) throw new RangeError(`kernel shape has ${dims.length} dims; at most ${MAX_DIMS} are supported`);
    const s = this.slot(72, 8);
    for (let i = 0; i < MAX_DIMS; i++) s.view.setBigInt64(s.off + i * 8, BigInt(dims[i] ?? 1), true);
    s.view.setInt32(s.off + 64, dims.length, true);
    s.view.setInt32(s.off + 68, 0, true);
    return this;
  }

  /** struct Strides8 { long long s[8]; } (64 bytes). */
  strides8(strides: readonly number[]): this {
    const s = this.slot(64, 8);
    for (let i = 0; i < MAX_DIMS; i++) s.view.setBigInt64(s.off + i * 8, BigInt(strides[i] ?? 0), true);
    return this;
  }

  /** A by-value struct written by `write` into `size` bytes aligned to 8. */
  struct(size: number, write: (view: DataView, off: number) => void): this {
    const s = this.slot(size, 8);
    write(s.view, s.off);
    return this;
  }
}

// The one parameter list every launch fills (see the header: launches copy it synchronously).
const shared = new ArgPack();

export type Dim3 = number | readonly [number, number?, number?];

function dims(d: Dim3): [number, number, number] {
  return typeof d === "number" ? [d, 1, 1] : [d[0], d[1] ?? 1, d[2] ?? 1];
}

/** A loaded CUBIN on one device and the functions looked up in it. */
export class KernelModule {
  private readonly functions = new Map<string, Ptr>();
  private readonly smemSet = new Map<string, number>();

  constructor(
    readonly name: string,
    readonly device: number,
    private readonly handle: Ptr,
  ) {}

  static load(name: string, device: number, cubin: Uint8Array): KernelModule {
    const drv = ensureDriverInitialised(check);
    const out: [Ptr | null] = [null];
    check(drv.cuModuleLoadData(out, cubin), "cuModuleLoadData", "driver", `kernels/${name}.cu on cuda:${device}`);
    if (out[0] === null) throw new Error(`cuModuleLoadData returned no module for kernels/${name}.cu`);
    return new KernelModule(name, device, out[0]);
  }

  fn(fnName: string): Ptr {
    let f = this.functions.get(fnName);
    if (f === undefined) {
      const out: [Ptr | null] = [null];
      check(ensureDriverInitialised(check).cuModuleGetFunction(out, this.handle, fnName), "cuModuleGetFunction", "driver", `${fnName} in kernels/${this.name}.cu`);
      f = out[0]!;
      this.functions.set(fnName, f);
    }
    return f;
  }

  /** Raises the dynamic shared memory limit of `fnName` (needed above 48 KiB). */
  allowSharedMemory(fnName: string, bytes: number): void {
    if ((this.smemSet.get(fnName) ?? 0) >= bytes) return;
    check(
      ensureDriverInitialised(check).cuFuncSetAttribute(this.fn(fnName), CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, bytes),
      "cuFuncSetAttribute",
      "driver",
      `${fnName}: ${bytes} bytes of dynamic shared memory`,
    );
    this.smemSet.set(fnName, bytes);
  }

  launch(fnName: string, grid: Dim3, block: Dim3, sharedBytes: number, stream: Stream, args: ArgPack): void {
    const [gx, gy, gz] = dims(grid);
    const [bx, by, bz] = dims(block);
    if (gx === 0 || gy === 0 || gz === 0) return;
    traceLaunch(fnName, [gx, gy, gz], [bx, by, bz]);
    probeStarvation(fnName, stream.handle);
    check(
      ensureDriverInitialised(check).cuLaunchKernel(this.fn(fnName), gx, gy, gz, bx, by, bz, sharedBytes, stream.handle, args.params, null),
      "cuLaunchKernel",
      "driver",
      `${fnName} grid [${gx}, ${gy}, ${gz}] block [${bx}, ${by}, ${bz}] shared ${sharedBytes}`,
    );
  }
}
