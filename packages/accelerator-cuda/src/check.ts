/**
 * The one place a status code from an NVIDIA library becomes an exception (STYLE.md, after tinygrad's
 * ops_cuda.py): every FFI call in this package goes through `check()`, which throws a `CudaError`
 * naming the call, the code's symbolic name and the library's own message for it.
 */
import { cudart } from "./ffi/cudart";
import { driver } from "./ffi/driver";
import { cublasLt } from "./ffi/cublasLt";
import { nccl } from "./ffi/nccl";
import { nvrtc } from "./ffi/nvrtc";

/** Which library a status code came from: each numbers its codes differently. */
export type CudaApi = "cudart" | "driver" | "cublasLt" | "nccl" | "nvrtc";

const NCCL_RESULT_NAMES = [
  "ncclSuccess",
  "ncclUnhandledCudaError",
  "ncclSystemError",
  "ncclInternalError",
  "ncclInvalidArgument",
  "ncclInvalidUsage",
  "ncclRemoteError",
  "ncclInProgress",
];

export class CudaError extends Error {
  constructor(
    message: string,
    readonly api: CudaApi,
    /** The function that failed, e.g. "cudaMallocAsync". */
    readonly call: string,
    readonly code: number,
    /** The code's symbolic name, e.g. "cudaErrorMemoryAllocation". */
    readonly codeName: string,
  ) {
    super(message);
    this.name = "CudaError";
  }
}

/** Symbolic name and message of a status code; lookups that fail fall back to the bare number. */
export function describeStatus(api: CudaApi, code: number): { name: string; message: string } {
  // NCCL's names are a fixed table, so they survive a library that cannot be asked.
  const known = api === "nccl" ? NCCL_RESULT_NAMES[code] : undefined;
  const fallback = { name: known ?? `${api} status ${code}`, message: "(no description available)" };
  try {
    switch (api) {
      case "cudart": {
        const rt = cudart();
        return { name: rt.cudaGetErrorName(code) ?? fallback.name, message: rt.cudaGetErrorString(code) ?? fallback.message };
      }
      case "driver": {
        const d = driver();
        const name: [string | null] = [null];
        const msg: [string | null] = [null];
        d.cuGetErrorName(code, name);
        d.cuGetErrorString(code, msg);
        return { name: name[0] ?? fallback.name, message: msg[0] ?? fallback.message };
      }
      case "cublasLt": {
        const lt = cublasLt();
        return {
          name: lt.cublasLtGetStatusName(code) ?? fallback.name,
          message: lt.cublasLtGetStatusString(code) ?? fallback.message,
        };
      }
      case "nccl":
        return { name: NCCL_RESULT_NAMES[code] ?? fallback.name, message: nccl().ncclGetErrorString(code) ?? fallback.message };
      case "nvrtc": {
        const s = nvrtc().nvrtcGetErrorString(code) ?? fallback.name;
        return { name: s, message: s };
      }
    }
  } catch {
    return fallback;
  }
}

/** Throws a CudaError unless `code` is 0 (success in every one of these libraries). */
export function check(code: number, call: string, api: CudaApi = "cudart", context?: string): void {
  if (code === 0) return;
  throw statusError(code, call, api, context);
}

/** The CudaError for a failed call, for callers that must clean up before throwing. */
export function statusError(code: number, call: string, api: CudaApi, context?: string): CudaError {
  const { name, message } = describeStatus(api, code);
  const where = context ? ` (${context})` : "";
  return new CudaError(`${call} failed with ${name} (${code}): ${message}${where}`, api, call, code, name);
}
