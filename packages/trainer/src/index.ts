/**
 * @fulgur/trainer: the Trainer, TrainingModule, callbacks, loggers, data loading, the built-in
 * precisions, the `single_device` strategy and the `cpu` accelerator.
 */
export { Trainer, type FitOptions } from "./trainer";
export {
  TrainingModule,
  type LogOptions,
  type OptimizerConfig,
  type SchedulerConfig,
  type StepOutput,
} from "./trainingModule";
export { parseTrainerOptions, trainerOptionsSchema, type TrainerOptions, type TrainerOptionsInput } from "./options";
export { PRECISIONS, PRECISION_ALIASES, createPrecision, type PrecisionName } from "./precision/precisions";
export { GradScaler, type GradScalerOptions } from "./precision/gradScaler";
export { gradientsAreFinite } from "./precision/finite";
export { SingleDeviceStrategy, precisionAwareStep, type SingleDeviceOptions } from "./strategies/singleDevice";
export { CpuAccelerator } from "./accelerators/cpuAccelerator";
export { registerBuiltins, resolveAccelerator, resolveStrategy } from "./plugins";
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
export { GPTLanguageModel, type GPTLanguageModelOptions } from "./demos/gptLanguageModel";
