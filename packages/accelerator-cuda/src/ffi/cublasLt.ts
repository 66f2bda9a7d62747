/**
 * Declarations of the cuBLASLt (libcublasLt.so.13) functions and enum values Fulgur's matmul uses:
 * a handle, operation/layout/preference descriptors, the algorithm heuristic and the matmul itself.
 * Attribute setters take the value through a typed array and its byte size, as the C API does.
 * Enum values are from cublasLt.h / library_types.h / cublas_api.h (ABI-stable across CUDA 12-13).
 */
import { lazyBindings } from "./libraries";
import type { Out, Ptr } from "./cudart";

export const CUBLASLT_PROTOTYPES = {
  cublasLtCreate: "int cublasLtCreate(_Out_ void **handle)",
  cublasLtDestroy: "int cublasLtDestroy(void *handle)",
  cublasLtGetVersion: "size_t cublasLtGetVersion()",
  cublasLtGetStatusName: "const char *cublasLtGetStatusName(int status)",
  cublasLtGetStatusString: "const char *cublasLtGetStatusString(int status)",
  cublasLtMatmulDescCreate: "int cublasLtMatmulDescCreate(_Out_ void **desc, int computeType, int scaleType)",
  cublasLtMatmulDescDestroy: "int cublasLtMatmulDescDestroy(void *desc)",
  cublasLtMatmulDescSetAttribute: "int cublasLtMatmulDescSetAttribute(void *desc, int attr, void *buf, size_t size)",
  cublasLtMatrixLayoutCreate:
    "int cublasLtMatrixLayoutCreate(_Out_ void **layout, int type, uint64_t rows, uint64_t cols, int64_t ld)",
  cublasLtMatrixLayoutDestroy: "int cublasLtMatrixLayoutDestroy(void *layout)",
  cublasLtMatrixLayoutSetAttribute:
    "int cublasLtMatrixLayoutSetAttribute(void *layout, int attr, void *buf, size_t size)",
  cublasLtMatmulPreferenceCreate: "int cublasLtMatmulPreferenceCreate(_Out_ void **pref)",
  cublasLtMatmulPreferenceDestroy: "int cublasLtMatmulPreferenceDestroy(void *pref)",
  cublasLtMatmulPreferenceSetAttribute:
    "int cublasLtMatmulPreferenceSetAttribute(void *pref, int attr, void *buf, size_t size)",
  cublasLtMatmulAlgoGetHeuristic:
    "int cublasLtMatmulAlgoGetHeuristic(void *handle, void *desc, void *a, void *b, void *c, void *d, " +
    "void *pref, int requested, void *results, _Out_ int *returned)",
  cublasLtMatmul:
    "int cublasLtMatmul(void *handle, void *desc, void *alpha, void *A, void *Adesc, void *B, void *Bdesc, " +
    "void *beta, void *C, void *Cdesc, void *D, void *Ddesc, void *algo, void *workspace, size_t workspaceSize, " +
    "void *stream)",
} as const;

export interface CublasLt {
  cublasLtCreate(handle: Out<Ptr | null>): number;
  cublasLtDestroy(handle: Ptr): number;
  cublasLtGetVersion(): number | bigint;
  cublasLtGetStatusName(status: number): string | null;
  cublasLtGetStatusString(status: number): string | null;
  cublasLtMatmulDescCreate(desc: Out<Ptr | null>, computeType: number, scaleType: number): number;
  cublasLtMatmulDescDestroy(desc: Ptr): number;
  cublasLtMatmulDescSetAttribute(desc: Ptr, attr: number, buf: ArrayBufferView, size: number): number;
  cublasLtMatrixLayoutCreate(layout: Out<Ptr | null>, type: number, rows: number, cols: number, ld: number): number;
  cublasLtMatrixLayoutDestroy(layout: Ptr): number;
  cublasLtMatrixLayoutSetAttribute(layout: Ptr, attr: number, buf: ArrayBufferView, size: number): number;
  cublasLtMatmulPreferenceCreate(pref: Out<Ptr | null>): number;
  cublasLtMatmulPreferenceDestroy(pref: Ptr): number;
  cublasLtMatmulPreferenceSetAttribute(pref: Ptr, attr: number, buf: ArrayBufferView, size: number): number;
  cublasLtMatmulAlgoGetHeuristic(
    handle: Ptr,
    desc: Ptr,
    a: Ptr,
    b: Ptr,
    c: Ptr,
    d: Ptr,
    pref: Ptr,
    requested: number,
    results: Uint8Array,
    returned: Out<number>,
  ): number;
  cublasLtMatmul(
    handle: Ptr,
    desc: Ptr,
    alpha: ArrayBufferView,
    A: Ptr,
    Adesc: Ptr,
    B: Ptr,
    Bdesc: Ptr,
    beta: ArrayBufferView,
    C: Ptr,
    Cdesc: Ptr,
    D: Ptr,
    Ddesc: Ptr,
    algo: Uint8Array,
    workspace: Ptr,
    workspaceSize: number,
    stream: Ptr,
  ): number;
}

export const cublasLt = lazyBindings<CublasLt>("cublasLt", CUBLASLT_PROTOTYPES);

// cudaDataType_t (library_types.h)
export const CUDA_R_32F = 0;
export const CUDA_R_64F = 1;
export const CUDA_R_16F = 2;
export const CUDA_R_32I = 10;
export const CUDA_R_16BF = 14;
// cublasComputeType_t
export const CUBLAS_COMPUTE_32F = 68;
export const CUBLAS_COMPUTE_32F_FAST_TF32 = 77;
export const CUBLAS_COMPUTE_64F = 70;
// cublasOperation_t
export const CUBLAS_OP_N = 0;
export const CUBLAS_OP_T = 1;
// cublasLtMatmulDescAttributes_t
export const CUBLASLT_MATMUL_DESC_TRANSA = 3;
export const CUBLASLT_MATMUL_DESC_TRANSB = 4;
export const CUBLASLT_MATMUL_DESC_EPILOGUE = 7;
export const CUBLASLT_MATMUL_DESC_BIAS_POINTER = 8;
export const CUBLASLT_MATMUL_DESC_BIAS_BATCH_STRIDE = 10;
export const CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER = 11;
export const CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD = 12;
export const CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE = 26;
// cublasLtEpilogue_t
export const CUBLASLT_EPILOGUE_DEFAULT = 1;
export const CUBLASLT_EPILOGUE_RELU = 2;
export const CUBLASLT_EPILOGUE_BIAS = 4;
export const CUBLASLT_EPILOGUE_GELU = 32;
export const CUBLASLT_EPILOGUE_GELU_AUX = 160;
export const CUBLASLT_EPILOGUE_GELU_BIAS = 36;
export const CUBLASLT_EPILOGUE_GELU_AUX_BIAS = 164;
export const CUBLASLT_EPILOGUE_DGELU = 192;
export const CUBLASLT_EPILOGUE_DGELU_BGRAD = 208;
export const CUBLASLT_EPILOGUE_BGRADA = 256;
export const CUBLASLT_EPILOGUE_BGRADB = 512;
// cublasLtMatrixLayoutAttribute_t
export const CUBLASLT_MATRIX_LAYOUT_TYPE = 0;
export const CUBLASLT_MATRIX_LAYOUT_ORDER = 1;
export const CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT = 5;
export const CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET = 6;
// cublasLtOrder_t
export const CUBLASLT_ORDER_COL = 0;
export const CUBLASLT_ORDER_ROW = 1;
// cublasLtMatmulPreferenceAttributes_t
export const CUBLASLT_MATMUL_PREF_SEARCH_MODE = 0;
export const CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES = 1;
export const CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES = 5;
export const CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES = 6;
export const CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES = 7;
export const CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES = 8;
// cublasStatus_t
export const CUBLAS_STATUS_SUCCESS = 0;
export const CUBLAS_STATUS_INVALID_VALUE = 7;
export const CUBLAS_STATUS_NOT_SUPPORTED = 15;

/** sizeof(cublasLtMatmulAlgo_t): uint64_t data[8]. */
export const MATMUL_ALGO_BYTES = 64;
/**
 * sizeof(cublasLtMatmulHeuristicResult_t): { cublasLtMatmulAlgo_t algo; size_t workspaceSize;
 * cublasStatus_t state; float wavesCount; int reserved[4]; } = 64 + 8 + 4 + 4 + 16.
 */
export const HEURISTIC_RESULT_BYTES = 96;
export const HEURISTIC_WORKSPACE_OFFSET = 64;
export const HEURISTIC_STATE_OFFSET = 72;
