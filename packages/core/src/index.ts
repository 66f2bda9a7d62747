/**
 * @fulgur/core: the contracts every Fulgur plugin implements and the string registries that find
 * them by name. No runtime code beyond the registries and the shape checks.
 */
export { CONTRACT_VERSION, isCompatibleContract } from "./version";
export type { ContractVersioned } from "./plugin";
export type { Store } from "./store";
export type { ProcessGroup, ReduceOp, Work } from "./processGroup";
export type { ClusterEnvironment } from "./clusterEnvironment";
export type { Accelerator, AcceleratorMemoryStats, DeviceMemoryInfo, DeviceMemoryReporting, ProcessGroupOptions, ProcessGroupProvider } from "./accelerator";
export { providesProcessGroup, reportsDeviceMemory, reportsDeviceTotalMemory } from "./accelerator";
export type {
  OptimizerStepOptions,
  OptimizerStepResult,
  Precision,
  PrecisionStepOptions,
  StepCollectives,
} from "./precision";
export type { Checkpoint, CheckpointIO, CheckpointMeta } from "./checkpointIO";
export { MODEL_PREFIX, OPTIMIZER_PREFIX } from "./checkpointIO";
export type {
  BackwardSyncControl,
  BatchContext,
  BatchRunning,
  DataParallelLayout,
  ExceptionAware,
  Launching,
  MemoryBreakdown,
  MemoryEstimate,
  MemoryEstimateInput,
  MemoryPhase,
  MemoryEstimating,
  ModuleBuilding,
  OptimizerState,
  OptimizerStateHandling,
  Strategy,
  StrategyContext,
  StreamedSaveInput,
  StreamedSaving,
} from "./strategy";
export {
  buildsModule,
  estimatesMemory,
  handlesOptimizerState,
  hasBackwardSyncControl,
  hasDataParallelLayout,
  isExceptionAware,
  isLaunching,
  runsBatch,
  savesStreamed,
} from "./strategy";
export {
  assertAccelerator,
  assertCheckpointIO,
  assertPrecision,
  assertStrategy,
  contractProblems,
  isAccelerator,
  isCheckpointIO,
  isClusterEnvironment,
  isPrecision,
  isStrategy,
} from "./conformance";
export { KNOWN_ACCELERATOR_PACKAGES, KNOWN_STRATEGY_PACKAGES } from "./knownPackages";
export {
  AcceleratorRegistry,
  Registry,
  StrategyRegistry,
  UnknownPluginError,
  closestName,
  notInstalledHint,
  type PluginFactory,
  type PluginOptions,
  type RegisterOptions,
  type RegistryEntry,
} from "./registry";
