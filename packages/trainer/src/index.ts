/**
 * @fulgur/trainer: the Trainer, TrainingModule, callbacks, loggers, data loading and the `cpu`
 * accelerator. Strategies, precisions and checkpoint IO are found by name or taken as objects.
 */
export { NonFiniteLossError, Trainer, type FitOptions } from "./trainer";
export {
  TrainingModule,
  type LogOptions,
  type OptimizerConfig,
  type SchedulerConfig,
  type StepOutput,
} from "./trainingModule";
export { parseTrainerOptions, trainerOptionsSchema, type TrainerOptions, type TrainerOptionsInput } from "./options";
// The precisions and `single_device` live in @fulgur/strategy-kit; re-exported for scripts that import only the Trainer.
export {
  GradScaler,
  PRECISIONS,
  PRECISION_ALIASES,
  SingleDeviceStrategy,
  createPrecision,
  gradientsAreFinite,
  type GradScalerOptions,
  type PrecisionName,
  type SingleDeviceOptions,
} from "@fulgur/strategy-kit";
export { CpuAccelerator } from "./accelerators/cpuAccelerator";
export { loadStrategyPackage, registerBuiltins, resolveAccelerator, resolveStrategy, sortPlugins, type ChosenPlugins, type ResolvedStrategy } from "./plugins";
export type { Callback } from "./callbacks/callback";
export { ModelCheckpoint, type ModelCheckpointOptions } from "./callbacks/modelCheckpoint";
export { EarlyStopping, type EarlyStoppingOptions } from "./callbacks/earlyStopping";
export { LearningRateMonitor } from "./callbacks/learningRateMonitor";
export { ProgressBar } from "./callbacks/progressBar";
export type { Logger, Metrics } from "./loggers/logger";
export { CSVLogger, JSONLinesLogger, type FileLoggerOptions } from "./loggers/fileLoggers";
export type { Dataset } from "./data/dataset";
export { ArrayDataset } from "./data/dataset";
export { DataLoader, defaultCollate, type Collate, type DataLoaderOptions } from "./data/dataLoader";
export { DistributedSampler, RandomSampler, SequentialSampler, permutation, type Sampler, type DistributedSamplerOptions } from "./data/sampler";
export { ByteTokenizer, TextDataset, listTextFiles, type TextDatasetOptions } from "./data/textDataset";
export { MODEL_PREFIX, OPTIMIZER_PREFIX, buildCheckpoint, moduleStateOf } from "./checkpointing";
export { PLAN_HEADROOM, defaultCandidates, formatBytes, planMemory, renderPlan, type MemoryPlan, type PlanCandidate, type PlanInput, type PlanRow } from "./plan/memoryPlan";
export { AUTO_ORDER_MULTI, AUTO_ORDER_SINGLE, chooseStrategy, type AutoChoice } from "./plan/autoStrategy";
export { describeMachine, parseBytes, parseCount, type Machine, type MachineDescription } from "./plan/machine";
export { MemoryPlanError, planTrainingModule, type PlanRequest } from "./plan/preflight";
export { withMetaModel } from "./plan/metaModel";
export { TrainingOutOfMemoryError, outOfMemoryAdvice } from "./plan/outOfMemory";
