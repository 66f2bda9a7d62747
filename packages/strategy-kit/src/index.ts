/**
 * @fulgur/strategy-kit: what every strategy stands on. `BaseStrategy` (single-device behaviour
 * and defaults), `ParallelStrategy` (launch, process groups, failures that travel, collectives on
 * numbers, JSON and tensors), the built-in precisions with the one optimizer-step sequence,
 * `single_device`, option parsing that names the bad field, and memory estimates. The conformance
 * kit third-party authors run in their own CI is `@fulgur/strategy-kit/testing`.
 */
export { BaseStrategy, type BaseStrategyOptions } from "./baseStrategy";
export { ParallelStrategy, StrategySetupError } from "./parallelStrategy";
export { SingleDeviceStrategy, type SingleDeviceOptions } from "./singleDevice";
export {
  BasePrecision,
  MixedFp16Precision,
  PRECISIONS,
  PRECISION_ALIASES,
  createPrecision,
  type PrecisionName,
} from "./precision/precisions";
export { GradScaler, type GradScalerOptions } from "./precision/gradScaler";
export { gradientsAreFinite } from "./precision/finite";
export { runOptimizerStep } from "./precision/optimizerStep";
export {
  PARALLEL_ALLOWED,
  PARALLEL_DEFAULTS,
  PARALLEL_SHAPE,
  StrategyOptionError,
  parseStrategyOptions,
  showValue,
  type OptionSpec,
  type ParallelOptions,
  type StartMethod,
} from "./options";
export { type Race, STATE_BROADCAST_BYTES, allReduceTensors, broadcastJson, broadcastTensors, identityRace, reduceScalar } from "./collectives";
export { FailureGuard, type FailureGuardOptions } from "./failureGuard";
export { WorkerFailureError, forkWorkers, relaunchScript, workerNodeFlags, type WorkerLaunch } from "./launchers";
export { OPTIMIZER_FORMAT, OPTIMIZER_FORMAT_VERSION, loadNamedOptimizerState, namedOptimizerState, type StateEntry } from "./optimizerState";
export { DeviceMesh } from "./deviceMesh";
export { COMPLETED_WORK, SoloGroup } from "./soloGroup";
export {
  EMPTY_BREAKDOWN,
  activationNote,
  autocastCopyBytes,
  breakdown,
  checkEstimateInput,
  estimateReplicatedMemory,
  modelBytes,
  precisionDtypes,
  resolveActivations,
  segmentGradients,
  type ModelBytes,
} from "./memoryEstimate";
export { simulateStep, type HeldBytes, type SegmentMemory, type StepLayout, type StepPeak } from "./stepMemory";
export {
  KIT_STRATEGIES,
  PACKAGE_NAME,
  registerStrategies,
  registerTable,
  type StrategyEntry,
  type StrategyRegistryLike,
} from "./registration";
