/**
 * The FFI layer without a GPU: every declared prototype parses (koffi checks the C syntax and the
 * types without loading a library), each declaration's C name matches its key, and a missing
 * library fails with an error that says which file was looked for and how to provide it.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import koffi from "koffi";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { CUDART_PROTOTYPES, cudart } from "../src/ffi/cudart";
import { DRIVER_PROTOTYPES } from "../src/ffi/driver";
import { CUBLASLT_PROTOTYPES, HEURISTIC_RESULT_BYTES, MATMUL_ALGO_BYTES } from "../src/ffi/cublasLt";
import { NCCL_PROTOTYPES, NCCL_UNIQUE_ID_BYTES, declareNcclTypes } from "../src/ffi/nccl";
import { NVRTC_PROTOTYPES } from "../src/ffi/nvrtc";
import {
  CudaLibraryError,
  LIB_DIR_ENV,
  SONAMES,
  libraryPath,
  loadLibrary,
  probeLibrary,
  resetLoadedLibrariesForTests,
} from "../src/ffi/libraries";

const TABLES: Record<string, Readonly<Record<string, string>>> = {
  cudart: CUDART_PROTOTYPES,
  driver: DRIVER_PROTOTYPES,
  cublasLt: CUBLASLT_PROTOTYPES,
  nccl: NCCL_PROTOTYPES,
  nvrtc: NVRTC_PROTOTYPES,
};

// koffi registers a named prototype's name as a type, so each one is parsed exactly once.
const parsed = new Map<string, ReturnType<typeof koffi.proto>>();
function parse(proto: string): ReturnType<typeof koffi.proto> {
  let t = parsed.get(proto);
  if (!t) {
    t = koffi.proto(proto);
    parsed.set(proto, t);
  }
  return t;
}

describe("prototype tables", () => {
  declareNcclTypes();
  for (const [lib, table] of Object.entries(TABLES)) {
    it(`every ${lib} prototype parses and is named like its key`, () => {
      for (const [key, proto] of Object.entries(table)) {
        const t = parse(proto);
        expect(t.proto?.name ?? t.name, `${lib}.${key}`).toBe(key);
      }
    });
  }

  it("declares the functions the package needs", () => {
    for (const name of ["cudaMallocAsync", "cudaFreeAsync", "cudaMemPoolSetAttribute", "cudaHostAlloc", "cudaEventElapsedTime", "cudaStreamWaitEvent"]) {
      expect(CUDART_PROTOTYPES).toHaveProperty(name);
    }
    for (const name of ["cuModuleLoadData", "cuModuleGetFunction", "cuLaunchKernel", "cuFuncSetAttribute"]) expect(DRIVER_PROTOTYPES).toHaveProperty(name);
    for (const name of ["ncclCommInitRank", "ncclAllReduce", "ncclReduceScatter", "ncclAllGather", "ncclCommAbort"]) expect(NCCL_PROTOTYPES).toHaveProperty(name);
    for (const name of ["nvrtcCompileProgram", "nvrtcGetCUBIN", "nvrtcGetProgramLog"]) expect(NVRTC_PROTOTYPES).toHaveProperty(name);
    for (const name of ["cublasLtMatmul", "cublasLtMatmulAlgoGetHeuristic", "cublasLtMatrixLayoutSetAttribute"]) expect(CUBLASLT_PROTOTYPES).toHaveProperty(name);
  });

  it("lays out ncclUniqueId as 128 bytes passed by value", () => {
    expect(koffi.sizeof("ncclUniqueId")).toBe(NCCL_UNIQUE_ID_BYTES);
    const init = parse(NCCL_PROTOTYPES.ncclCommInitRank);
    const arg = init.proto!.arguments[2] as unknown as { type: { name: string; size: number } };
    expect(arg.type.name).toBe("ncclUniqueId");
    expect(arg.type.size).toBe(128);
  });

  it("sizes the cuBLASLt heuristic result as the C struct", () => {
    expect(MATMUL_ALGO_BYTES).toBe(64);
    expect(HEURISTIC_RESULT_BYTES).toBe(64 + 8 + 4 + 4 + 16);
  });
});

describe("missing libraries", () => {
  let dir: string;
  let saved: string | undefined;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "fulgur-nolib-"));
    saved = process.env[LIB_DIR_ENV];
    process.env[LIB_DIR_ENV] = dir;
    resetLoadedLibrariesForTests();
  });

  afterEach(() => {
    if (saved === undefined) delete process.env[LIB_DIR_ENV];
    else process.env[LIB_DIR_ENV] = saved;
    resetLoadedLibrariesForTests();
    rmSync(dir, { recursive: true, force: true });
  });

  it("looks exactly in FULGUR_CUDA_LIB_DIR when it is set", () => {
    expect(libraryPath("cudart")).toBe(join(dir, "libcudart.so.13"));
    expect(libraryPath("nccl", {})).toBe("libnccl.so.2");
    expect(SONAMES).toEqual({
      cudart: "libcudart.so.13",
      cuda: "libcuda.so.1",
      cublasLt: "libcublasLt.so.13",
      nccl: "libnccl.so.2",
      nvrtc: "libnvrtc.so.13",
    });
  });

  it("says which file was looked for, the override and how to provide it", () => {
    let err: unknown;
    try {
      loadLibrary("cudart");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CudaLibraryError);
    const e = err as CudaLibraryError;
    expect(e.library).toBe("cudart");
    expect(e.lookedFor).toBe(join(dir, "libcudart.so.13"));
    expect(e.message).toContain(`looked for ${join(dir, "libcudart.so.13")}`);
    expect(e.message).toContain(`${LIB_DIR_ENV}=${dir}`);
    expect(e.message).toContain("CUDA 13 runtime");
    expect(e.message).toContain("LD_LIBRARY_PATH");
  });

  it("names the driver, not the toolkit, for libcuda.so.1", () => {
    expect(() => loadLibrary("cuda")).toThrow(/NVIDIA driver/);
    expect(() => loadLibrary("nccl")).toThrow(/NCCL 2/);
    expect(() => loadLibrary("nvrtc")).toThrow(/libnvrtc\.so\.13/);
  });

  it("fails at first use of a binding, not at import, and probing never throws", () => {
    expect(() => cudart()).toThrow(CudaLibraryError);
    const p = probeLibrary("cublasLt");
    expect(p.ok).toBe(false);
    if (!p.ok) expect(p.error).toContain("libcublasLt.so.13");
  });
});
