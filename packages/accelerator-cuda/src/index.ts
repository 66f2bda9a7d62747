/**
 * @fulgur/accelerator-cuda: the tensor engine on NVIDIA GPUs with no Python and no native addon of
 * its own (koffi into libcudart, libcuda, cuBLASLt, NCCL and NVRTC), the "cuda"/"gpu" accelerator,
 * and the NCCL process group.
 *
 * Importing the package registers the "cuda" backend with @fulgur/tensor and the "cuda"/"gpu"
 * accelerators with @fulgur/core's registry; neither touches a GPU or loads a library. Libraries
 * are loaded on first use (FULGUR_CUDA_LIB_DIR overrides where), kernels are compiled with NVRTC on
 * first use and cached on disk.
 */
import { AcceleratorRegistry } from "@fulgur/core";
import { registerAccelerators } from "./accelerator";
import { registerCudaBackend } from "./cudaBackend";

export { CudaBackend, cudaBackend, registerCudaBackend } from "./cudaBackend";
export { CudaAccelerator, registerAccelerators, type AcceleratorRegistryLike } from "./accelerator";
export { NcclProcessGroup, NcclTimeoutError, type NcclProcessGroupOptions } from "./nccl";
export { PROCESS_GROUP_ENV, chooseProcessGroup, createCudaProcessGroup, type CudaProcessGroupKind, type CudaProcessGroupOptions } from "./cudaProcessGroup";
export {
  cudaEnvironmentReport,
  formatEnvironmentReport,
  type CudaEnvironmentReport,
  type GpuReport,
  type LibraryReport,
} from "./envReport";
export { CudaError, check, type CudaApi } from "./check";
export { CudaLibraryError, LIB_DIR_ENV, SONAMES, libraryPath, probeLibrary, type LibraryName } from "./ffi/libraries";
export { CudaOutOfMemoryError, OOM_ADVICE, type MemoryStats } from "./allocator";
export { KernelCompileError } from "./nvrtc";
export { KernelCache, cacheKey, defaultCacheDir } from "./kernelCache";
export { deviceCount, deviceProperties, parseDevice, type DeviceProperties } from "./device";
export { CudaEvent } from "./event";
export { CudaStorage } from "./storage";
export { isPinned, pinnedBufferCount } from "./hostPinning";

registerCudaBackend();
registerAccelerators(AcceleratorRegistry);
