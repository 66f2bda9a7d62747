/**
 * @fulgur/cli: the `fulgur` command. The program and each command's builder and workhorse are
 * exported, so tests and tools drive them in-process instead of spawning the executable.
 */
export { createProgram, runCli } from "./program";
export type { CliContext } from "./context";
export { type CliIO, processIO } from "./io";
export { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError } from "./errors";
export { runCommand, resolveRunOptions, type RunOptions } from "./commands/run";
export { fitCommand, resolveFitConfig, runFit, type FitResult } from "./commands/fit";
export {
  ConfigError,
  applyOverrides,
  loadConfigFile,
  parseOverride,
  parseOverrideValue,
  validateFitConfig,
  type FitConfig,
  type Override,
} from "./fit/config";
export {
  CONVERT_DTYPES,
  checkpointCommand,
  convertCheckpoint,
  inspectCheckpoint,
  type ConvertOptions,
  type ConvertSummary,
  type InspectReport,
} from "./commands/checkpoint";
export { collectPlugins, renderPlugins, strategiesCommand, type PluginsReport } from "./commands/strategies";
export { collectEnv, envCommand, renderCudaReport, renderEnv, type EnvReport } from "./commands/env";
export { benchCommand, resolveGptBench } from "./commands/bench";
export { gptTrainingBench, type GptBenchOptions, type GptBenchResult } from "./bench/gpt";
export { cpuMatmulBench, type MatmulBenchResult } from "./bench/matmul";
export { tryImport, installedVersion, CLI_VERSION } from "./packages";
