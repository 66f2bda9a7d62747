/**
 * @fulgur/tensor: tensors, dtypes, autograd, deterministic memory, the Backend contract and the
 * CPU backend.
 */
export { Tensor, isTensor, type HookHandle, type PostAccumulateGradHook } from "./tensor";
export * from "./ops";
export type { BackwardOptions, GradHook } from "./autograd";
export { DeferredWeightGradients, deferWeightGradients } from "./autograd";
export { checkpoint } from "./checkpoint";
export { materialize, recordInit } from "./materialize";
export { autocast, autocastDType, enableGrad, isGradEnabled, noGrad, setGradEnabled } from "./gradMode";
export {
  memoryStats,
  resetPeakMemory,
  scope,
  scopeAsync,
  scopeDepth,
  type DeviceMemoryStats,
} from "./memory";
export { Generator, defaultGenerator, manualSeed, setDefaultGenerator, type GeneratorState } from "./random";
export {
  defaultDeviceName,
  getBackend,
  normalizeDevice,
  registerBackend,
  registeredBackends,
  withDevice,
  type BackendFactory,
} from "./device";
export type {
  AdamWHyper,
  Backend,
  BackendMemoryStats,
  PendingRead,
  PendingWork,
  BinaryOp,
  MatmulOptions,
  PhiloxState,
  ReduceOp,
  Storage,
  UnaryOp,
  View,
} from "./backend";
export {
  DTYPES,
  allocHost,
  assertDType,
  bf16BitsToF32,
  decodeAll,
  encodeElement,
  f16BitsToF32,
  f32ToBf16Bits,
  f32ToF16Bits,
  isFloating,
  isStorageArray,
  itemsize,
  promote,
  readElement,
  type DType,
  type HostArray,
} from "./dtype";
export {
  broadcastShapes,
  contiguousStrides,
  formatShape,
  isContiguous,
  numel,
  type Shape,
} from "./shape";
export { cpuBackend, philox4x32, setCpuMemoryLimit } from "./cpu";
export { OutOfMemoryError, annotateOutOfMemory, isOutOfMemory, type OutOfMemoryContext } from "./outOfMemory";
export { startReadyWorker, type ReadyWorkerEntries } from "./readyWorker";
export { tsxWorkerBootstrap } from "./sourceWorker";
export { cpuOptimizerThreads, cpuOptimizerThreadedSteps, setCpuOptimizerThreads, stopCpuOptimizerThreads } from "./cpu/optimizerThreads";
export { hostBytesOf, sharedHostMemory } from "./cpu/sharedMemory";
export { fusedAdamW, routeAdamW, type AdamWRoute, type FusedAdamWCall } from "./adamwRoute";
export { addBeside, fusedAdamWBeside } from "./beside";
export { settleWork } from "./pendingWork";
export { MetaBackend, metaBackend } from "./meta";
