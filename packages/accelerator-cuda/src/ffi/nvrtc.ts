/**
 * Declarations of NVRTC (libnvrtc.so.13), the runtime compiler that turns kernels/*.cu into a CUBIN
 * for the device's architecture on first use (src/nvrtc.ts drives it, src/kernelCache.ts caches
 * the result on disk). Logs and CUBINs are written into caller-allocated buffers.
 */
import { lazyBindings } from "./libraries";
import type { Out, Ptr } from "./cudart";

export const NVRTC_PROTOTYPES = {
  nvrtcVersion: "int nvrtcVersion(_Out_ int *major, _Out_ int *minor)",
  nvrtcCreateProgram:
    "int nvrtcCreateProgram(_Out_ void **prog, const char *src, const char *name, int numHeaders, " +
    "const char **headers, const char **includeNames)",
  nvrtcCompileProgram: "int nvrtcCompileProgram(void *prog, int numOptions, const char **options)",
  nvrtcGetProgramLogSize: "int nvrtcGetProgramLogSize(void *prog, _Out_ size_t *size)",
  nvrtcGetProgramLog: "int nvrtcGetProgramLog(void *prog, void *log)",
  nvrtcGetCUBINSize: "int nvrtcGetCUBINSize(void *prog, _Out_ size_t *size)",
  nvrtcGetCUBIN: "int nvrtcGetCUBIN(void *prog, void *cubin)",
  nvrtcDestroyProgram: "int nvrtcDestroyProgram(_Inout_ void **prog)",
  nvrtcGetErrorString: "const char *nvrtcGetErrorString(int result)",
} as const;

export interface Nvrtc {
  nvrtcVersion(major: Out<number>, minor: Out<number>): number;
  nvrtcCreateProgram(
    prog: Out<Ptr | null>,
    src: string,
    name: string,
    numHeaders: number,
    headers: string[] | null,
    includeNames: string[] | null,
  ): number;
  nvrtcCompileProgram(prog: Ptr, numOptions: number, options: string[]): number;
  nvrtcGetProgramLogSize(prog: Ptr, size: Out<number | bigint>): number;
  nvrtcGetProgramLog(prog: Ptr, log: Uint8Array): number;
  nvrtcGetCUBINSize(prog: Ptr, size: Out<number | bigint>): number;
  nvrtcGetCUBIN(prog: Ptr, cubin: Uint8Array): number;
  nvrtcDestroyProgram(prog: [Ptr | null]): number;
  nvrtcGetErrorString(result: number): string | null;
}

export const nvrtc = lazyBindings<Nvrtc>("nvrtc", NVRTC_PROTOTYPES);

export const NVRTC_SUCCESS = 0;
export const NVRTC_ERROR_COMPILATION = 6;
