/**
 * Declarations of the CUDA runtime (libcudart.so.13) functions Fulgur calls, and nothing else.
 * Handles (streams, events, pools) and device pointers cross the boundary as BigInt (koffi 3's
 * pointer representation); `_Out_` parameters take a one-element array that receives the value.
 * Every function returns a cudaError_t that the caller passes to `check()` (src/check.ts).
 */
import { lazyBindings } from "./libraries";

export const CUDART_PROTOTYPES = {
  cudaGetDeviceCount: "int cudaGetDeviceCount(_Out_ int *count)",
  cudaSetDevice: "int cudaSetDevice(int device)",
  cudaGetDevice: "int cudaGetDevice(_Out_ int *device)",
  cudaDeviceGetAttribute: "int cudaDeviceGetAttribute(_Out_ int *value, int attr, int device)",
  cudaDeviceSynchronize: "int cudaDeviceSynchronize()",
  cudaMemGetInfo: "int cudaMemGetInfo(_Out_ size_t *free, _Out_ size_t *total)",
  cudaDeviceGetDefaultMemPool: "int cudaDeviceGetDefaultMemPool(_Out_ void **pool, int device)",
  cudaMemPoolSetAttribute: "int cudaMemPoolSetAttribute(void *pool, int attr, void *value)",
  cudaMemPoolGetAttribute: "int cudaMemPoolGetAttribute(void *pool, int attr, void *value)",
  cudaMemPoolTrimTo: "int cudaMemPoolTrimTo(void *pool, size_t minBytesToKeep)",
  cudaMallocAsync: "int cudaMallocAsync(_Out_ void **devPtr, size_t size, void *stream)",
  cudaFreeAsync: "int cudaFreeAsync(void *devPtr, void *stream)",
  cudaMalloc: "int cudaMalloc(_Out_ void **devPtr, size_t size)",
  cudaFree: "int cudaFree(void *devPtr)",
  cudaMemcpyAsync: "int cudaMemcpyAsync(void *dst, void *src, size_t count, int kind, void *stream)",
  cudaMemsetAsync: "int cudaMemsetAsync(void *devPtr, int value, size_t count, void *stream)",
  cudaHostAlloc: "int cudaHostAlloc(_Out_ void **pHost, size_t size, unsigned int flags)",
  cudaFreeHost: "int cudaFreeHost(void *ptr)",
  cudaHostRegister: "int cudaHostRegister(void *ptr, size_t size, unsigned int flags)",
  cudaHostUnregister: "int cudaHostUnregister(void *ptr)",
  cudaStreamCreateWithFlags: "int cudaStreamCreateWithFlags(_Out_ void **stream, unsigned int flags)",
  cudaStreamSynchronize: "int cudaStreamSynchronize(void *stream)",
  cudaStreamDestroy: "int cudaStreamDestroy(void *stream)",
  cudaStreamWaitEvent: "int cudaStreamWaitEvent(void *stream, void *event, unsigned int flags)",
  cudaEventCreate: "int cudaEventCreate(_Out_ void **event)",
  cudaEventCreateWithFlags: "int cudaEventCreateWithFlags(_Out_ void **event, unsigned int flags)",
  cudaEventRecord: "int cudaEventRecord(void *event, void *stream)",
  cudaEventSynchronize: "int cudaEventSynchronize(void *event)",
  cudaEventQuery: "int cudaEventQuery(void *event)",
  cudaEventElapsedTime: "int cudaEventElapsedTime(_Out_ float *ms, void *start, void *end)",
  cudaEventDestroy: "int cudaEventDestroy(void *event)",
  cudaGetLastError: "int cudaGetLastError()",
  cudaGetErrorName: "const char *cudaGetErrorName(int error)",
  cudaGetErrorString: "const char *cudaGetErrorString(int error)",
  cudaDriverGetVersion: "int cudaDriverGetVersion(_Out_ int *version)",
  cudaRuntimeGetVersion: "int cudaRuntimeGetVersion(_Out_ int *version)",
} as const;

/** A device pointer, stream, event or pool handle: koffi passes and returns pointers as BigInt. */
export type Ptr = bigint;
/** What `_Out_ T *` receives: a one-element array the call writes into. */
export type Out<T> = [T];
/** `void *` arguments also accept host memory (typed arrays) and null. */
export type PtrArg = bigint | ArrayBufferView | null;

export interface Cudart {
  cudaGetDeviceCount(count: Out<number>): number;
  cudaSetDevice(device: number): number;
  cudaGetDevice(device: Out<number>): number;
  cudaDeviceGetAttribute(value: Out<number>, attr: number, device: number): number;
  cudaDeviceSynchronize(): number;
  cudaMemGetInfo(free: Out<number | bigint>, total: Out<number | bigint>): number;
  cudaDeviceGetDefaultMemPool(pool: Out<Ptr | null>, device: number): number;
  cudaMemPoolSetAttribute(pool: Ptr, attr: number, value: ArrayBufferView): number;
  cudaMemPoolGetAttribute(pool: Ptr, attr: number, value: ArrayBufferView): number;
  cudaMemPoolTrimTo(pool: Ptr, minBytesToKeep: number): number;
  cudaMallocAsync(devPtr: Out<Ptr | null>, size: number, stream: Ptr): number;
  cudaFreeAsync(devPtr: Ptr, stream: Ptr): number;
  cudaMalloc(devPtr: Out<Ptr | null>, size: number): number;
  cudaFree(devPtr: Ptr | null): number;
  cudaMemcpyAsync(dst: PtrArg, src: PtrArg, count: number, kind: number, stream: Ptr): number;
  cudaMemsetAsync(devPtr: Ptr, value: number, count: number, stream: Ptr): number;
  cudaHostAlloc(pHost: Out<Ptr | null>, size: number, flags: number): number;
  cudaFreeHost(ptr: Ptr): number;
  cudaHostRegister(ptr: PtrArg, size: number, flags: number): number;
  cudaHostUnregister(ptr: PtrArg): number;
  cudaStreamCreateWithFlags(stream: Out<Ptr | null>, flags: number): number;
  cudaStreamSynchronize(stream: Ptr): number;
  cudaStreamDestroy(stream: Ptr): number;
  cudaStreamWaitEvent(stream: Ptr, event: Ptr, flags: number): number;
  cudaEventCreate(event: Out<Ptr | null>): number;
  cudaEventCreateWithFlags(event: Out<Ptr | null>, flags: number): number;
  cudaEventRecord(event: Ptr, stream: Ptr): number;
  cudaEventSynchronize(event: Ptr): number;
  cudaEventQuery(event: Ptr): number;
  cudaEventElapsedTime(ms: Out<number>, start: Ptr, end: Ptr): number;
  cudaEventDestroy(event: Ptr): number;
  cudaGetLastError(): number;
  cudaGetErrorName(error: number): string | null;
  cudaGetErrorString(error: number): string | null;
  cudaDriverGetVersion(version: Out<number>): number;
  cudaRuntimeGetVersion(version: Out<number>): number;
}

/** The runtime's functions; loads libcudart on first call. */
export const cudart = lazyBindings<Cudart>("cudart", CUDART_PROTOTYPES);

// Enum values from driver_types.h (CUDA 13).
export const cudaSuccess = 0;
export const cudaErrorMemoryAllocation = 2;
export const cudaErrorNoDevice = 100;
export const cudaErrorNotReady = 600;
export const cudaMemcpyHostToDevice = 1;
export const cudaMemcpyDeviceToHost = 2;
export const cudaMemcpyDeviceToDevice = 3;
export const cudaStreamNonBlocking = 0x01;
export const cudaEventDefault = 0x00;
export const cudaEventDisableTiming = 0x02;
export const cudaHostAllocDefault = 0x00;
export const cudaHostRegisterPortable = 0x01;
export const cudaDevAttrMultiProcessorCount = 16;
export const cudaDevAttrComputeCapabilityMajor = 75;
export const cudaDevAttrComputeCapabilityMinor = 76;
export const cudaDevAttrMaxSharedMemoryPerBlockOptin = 97;
export const cudaDevAttrMemoryPoolsSupported = 115;
export const cudaMemPoolAttrReleaseThreshold = 0x4;
export const cudaMemPoolAttrReservedMemCurrent = 0x5;
export const cudaMemPoolAttrReservedMemHigh = 0x6;
export const cudaMemPoolAttrUsedMemCurrent = 0x7;
export const cudaMemPoolAttrUsedMemHigh = 0x8;
