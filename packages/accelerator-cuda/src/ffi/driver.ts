/**
 * Declarations of the CUDA driver API (libcuda.so.1) functions Fulgur needs: loading compiled
 * kernels (cuModuleLoadData), finding and launching them, and device facts the runtime does not
 * give cheaply (name, total memory). The runtime makes the device's primary context current on the
 * calling thread (cudaSetDevice), and these calls run in that context, so the two APIs share
 * streams and memory.
 */
import { lazyBindings } from "./libraries";
import type { Out, Ptr } from "./cudart";

export const DRIVER_PROTOTYPES = {
  cuInit: "int cuInit(unsigned int flags)",
  cuDriverGetVersion: "int cuDriverGetVersion(_Out_ int *version)",
  cuDeviceGet: "int cuDeviceGet(_Out_ int *device, int ordinal)",
  cuDeviceGetName: "int cuDeviceGetName(void *name, int len, int device)",
  cuDeviceTotalMem_v2: "int cuDeviceTotalMem_v2(_Out_ size_t *bytes, int device)",
  cuModuleLoadData: "int cuModuleLoadData(_Out_ void **module, void *image)",
  cuModuleUnload: "int cuModuleUnload(void *module)",
  cuModuleGetFunction: "int cuModuleGetFunction(_Out_ void **func, void *module, const char *name)",
  cuFuncSetAttribute: "int cuFuncSetAttribute(void *func, int attrib, int value)",
  cuLaunchKernel:
    "int cuLaunchKernel(void *f, unsigned int gridDimX, unsigned int gridDimY, unsigned int gridDimZ, " +
    "unsigned int blockDimX, unsigned int blockDimY, unsigned int blockDimZ, unsigned int sharedMemBytes, " +
    "void *stream, void *kernelParams, void *extra)",
  cuGetErrorName: "int cuGetErrorName(int error, _Out_ const char **str)",
  cuGetErrorString: "int cuGetErrorString(int error, _Out_ const char **str)",
} as const;

export interface Driver {
  cuInit(flags: number): number;
  cuDriverGetVersion(version: Out<number>): number;
  cuDeviceGet(device: Out<number>, ordinal: number): number;
  cuDeviceGetName(name: Uint8Array, len: number, device: number): number;
  cuDeviceTotalMem_v2(bytes: Out<number | bigint>, device: number): number;
  cuModuleLoadData(module: Out<Ptr | null>, image: Uint8Array): number;
  cuModuleUnload(module: Ptr): number;
  cuModuleGetFunction(func: Out<Ptr | null>, module: Ptr, name: string): number;
  cuFuncSetAttribute(func: Ptr, attrib: number, value: number): number;
  cuLaunchKernel(
    f: Ptr,
    gridX: number,
    gridY: number,
    gridZ: number,
    blockX: number,
    blockY: number,
    blockZ: number,
    sharedMemBytes: number,
    stream: Ptr,
    kernelParams: Ptr,
    extra: null,
  ): number;
  cuGetErrorName(error: number, str: Out<string | null>): number;
  cuGetErrorString(error: number, str: Out<string | null>): number;
}

let initialised = false;

/** The driver's functions; loads libcuda and calls cuInit(0) on first use. */
export const driver = lazyBindings<Driver>("cuda", DRIVER_PROTOTYPES);

/** cuInit must precede every other driver call; it is idempotent, but one call is enough. */
export function ensureDriverInitialised(check: (code: number, call: string) => void): Driver {
  const d = driver();
  if (!initialised) {
    check(d.cuInit(0), "cuInit");
    initialised = true;
  }
  return d;
}

export const CUDA_SUCCESS = 0;
export const CUDA_ERROR_NOT_READY = 600;
export const CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8;
