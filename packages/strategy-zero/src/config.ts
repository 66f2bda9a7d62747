/**
 * The DeepSpeed config a strategy runs with, resolved once at construction (DESIGN.md decision 10):
 * read from the `config` option (a path or an object) or the file FULGUR_DEEPSPEED_CONFIG_PATH
 * names, checked with @fulgur/deepspeed-config-schema's validate(), merged with the options that
 * were given (each option is the config key Lightning writes for it), and read into a frozen
 * ZeroPlan. Every problem is reported at once, in one ZeroConfigError, before any process starts.
 *
 * What comes from the Trainer ("auto" micro-batch and accumulation, clipping, the precision blocks)
 * is resolved later, where the Trainer hands it over: trainerValues.ts. Which keys act and which
 * are only reported: keys.ts.
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { type ConfigProblem, formatProblems, validate } from "@fulgur/deepspeed-config-schema";
import { DeepSpeedOptionError, type OffloadTarget, type ResolvedDeepSpeedOptions, type ZeroStage } from "./api";
import { DEEPSPEED_FP16_DEFAULTS, type LossScalerSettings } from "./lossScaler";

/** The environment variable naming a config file when the `config` option is not given (Lightning: PL_DEEPSPEED_CONFIG_PATH). */
export const CONFIG_ENV = "FULGUR_DEEPSPEED_CONFIG_PATH";

/** Where a piece of state lives: on the device, offloaded to host memory, or to NVMe. */
export type OffloadDevice = "none" | OffloadTarget;

/** Everything the strategy acts on, read from the merged config. */
export interface ZeroPlan {
  readonly stage: ZeroStage;
  readonly offloadOptimizer: OffloadDevice;
  readonly offloadParam: OffloadDevice;
  /** offload_optimizer.ratio: the share of the optimizer state offloaded, by whole units (1 when absent). */
  readonly offloadRatio: number;
  /** Where zero.Init would first place the model (accepted; the model is built on meta here). */
  readonly remoteDevice: OffloadTarget | null;
  /** The NVMe directory, when something is offloaded to NVMe. */
  readonly nvmePath: string | null;
  /** How files are read and written when something is offloaded to NVMe (DeepSpeed's defaults where the config is silent). */
  readonly nvme: NvmeTuning | null;
  /** stage3_prefetch_bucket_size (elements), when given as a number. */
  readonly prefetchBucket: number | null;
  /** stage3_max_live_parameters (elements), when given as a number. */
  readonly maxLiveParameters: number | null;
  /** stage3_max_reuse_distance (elements), when given as a number. */
  readonly maxReuseDistance: number | null;
  /** stage3_param_persistence_threshold (elements), when given as a number. */
  readonly persistenceThreshold: number | null;
  readonly overlapComm: boolean | null;
  /** gradient_clipping as a number (0: none); null when absent or "auto" (the Trainer's). */
  readonly gradientClipping: number | null;
  /** fp16.enabled / bf16.enabled; null when absent or "auto" (the Trainer's precision decides). */
  readonly fp16Enabled: boolean | null;
  readonly bf16Enabled: boolean | null;
  readonly lossScaler: LossScalerSettings;
  /** train_batch_size and train_micro_batch_size_per_gpu as numbers; null when absent or "auto". */
  readonly batch: { readonly train: number | null; readonly micro: number | null };
  /** The merged config (options as keys, the stage resolved), frozen. */
  readonly config: Readonly<Record<string, unknown>>;
  /** Where the config came from, for messages: a file, the config object, or the options alone. */
  readonly source: string;
}

/** The NVMe offload's I/O settings, from the offload blocks, aio and sub_group_size. */
export interface NvmeTuning {
  /** buffer_count: reads and writes in flight at most (offload_optimizer's, else offload_param's). */
  readonly bufferCount: number;
  /** offload_param.buffer_size: bytes per read or write at most. */
  readonly bufferSize: number;
  /** aio.block_size: file offsets are its multiples. */
  readonly blockSize: number;
  /** aio.intra_op_parallelism (or its documented name thread_count): I/O worker threads. */
  readonly threads: number;
  /** sub_group_size: elements of slices stepped together. */
  readonly subGroupSize: number;
}

/** DeepSpeed's defaults (its offload and aio config models). */
const NVME_DEFAULTS = { optimizerBufferCount: 4, paramBufferCount: 5, bufferSize: 1e8, blockSize: 1048576, threads: 1, subGroupSize: 1e9 } as const;

/** A DeepSpeed config (with the options merged in) that cannot run; `problems` lists every reason. */
export class ZeroConfigError extends Error {
  override readonly name = "ZeroConfigError";
  constructor(
    strategyName: string,
    readonly source: string,
    readonly problems: readonly ConfigProblem[],
  ) {
    const n = problems.length;
    super(formatProblems(problems, { heading: `${strategyName}: ${source} has ${n} problem${n === 1 ? "" : "s"}:` }));
  }
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

// ---- reading -------------------------------------------------------------------------------------

interface LoadedConfig {
  readonly config: Record<string, unknown> | null;
  readonly source: string;
}

function readJson(path: string, label: string, option: string, strategyName: string): unknown {
  if (!existsSync(path) || !statSync(path).isFile()) {
    throw new DeepSpeedOptionError(option, `${strategyName} ${label}: got ${JSON.stringify(path)}; there is no such file (expected the path of a DeepSpeed JSON config)`);
  }
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new DeepSpeedOptionError(option, `${strategyName} ${label}: ${JSON.stringify(path)} is not JSON: ${(err as Error).message}`);
  }
}

/** The config as given (a deep copy, so merging never writes into the caller's object), or null. */
export function loadConfig(option: ResolvedDeepSpeedOptions["config"], strategyName: string, env: NodeJS.ProcessEnv = process.env): LoadedConfig {
  if (typeof option === "string") {
    return { config: readJson(option, "option config", "config", strategyName) as Record<string, unknown>, source: `the config ${JSON.stringify(option)}` };
  }
  if (option !== null) return { config: structuredClone(option) as Record<string, unknown>, source: "the config object" };
  const fromEnv = env[CONFIG_ENV];
  if (fromEnv) {
    const config = readJson(fromEnv, `environment variable ${CONFIG_ENV}`, CONFIG_ENV, strategyName) as Record<string, unknown>;
    return { config, source: `the config ${JSON.stringify(fromEnv)} (from ${CONFIG_ENV})` };
  }
  return { config: null, source: "the strategy options" };
}

// ---- options as config keys ----------------------------------------------------------------------

interface OptionKey {
  readonly path: string;
  readonly value: unknown;
  readonly option: string;
}

/** The config keys the given options stand for (Lightning's default config, limited to what was given). */
function optionKeys(o: ResolvedDeepSpeedOptions, strategyName: string): OptionKey[] {
  const keys: OptionKey[] = [];
  const put = (path: string, value: unknown, option: string): void => {
    if (value !== null && value !== undefined) keys.push({ path, value, option });
  };
  const alone = (option: string, needs: string): DeepSpeedOptionError =>
    new DeepSpeedOptionError(option, `${strategyName} option ${option}: it says where ${needs} goes, but ${needs} is not on; add ${needs}: true`);
  if (o.offloadOptimizerDevice !== null && o.offloadOptimizer !== true) throw alone("offloadOptimizerDevice", "offloadOptimizer");
  if (o.offloadParamsDevice !== null && o.offloadParameters !== true) throw alone("offloadParamsDevice", "offloadParameters");
  const zero = "zero_optimization";
  put(`${zero}.stage`, o.stage, "stage");
  const optimizerDevice = o.offloadOptimizer ? (o.offloadOptimizerDevice ?? "cpu") : null;
  const paramsDevice = o.offloadParameters ? (o.offloadParamsDevice ?? "cpu") : null;
  put(`${zero}.offload_optimizer.device`, optimizerDevice, "offloadOptimizer");
  put(`${zero}.offload_param.device`, paramsDevice, "offloadParameters");
  // Lightning writes nvme_path beside every offload; it only means something beside an NVMe one.
  const nvme = o.nvmePath ?? "/local_nvme";
  if (optimizerDevice === "nvme") put(`${zero}.offload_optimizer.nvme_path`, nvme, "nvmePath");
  if (paramsDevice === "nvme") put(`${zero}.offload_param.nvme_path`, nvme, "nvmePath");
  if (o.nvmePath !== null && optimizerDevice !== "nvme" && paramsDevice !== "nvme") {
    throw new DeepSpeedOptionError("nvmePath", `${strategyName} option nvmePath: got ${JSON.stringify(o.nvmePath)}, but nothing is offloaded to NVMe (offloadOptimizerDevice or offloadParamsDevice "nvme")`);
  }
  put(`${zero}.contiguous_gradients`, o.contiguousGradients, "contiguousGradients");
  put(`${zero}.overlap_comm`, o.overlapComm, "overlapComm");
  put(`${zero}.allgather_bucket_size`, o.allgatherBucketSize, "allgatherBucketSize");
  put(`${zero}.reduce_bucket_size`, o.reduceBucketSize, "reduceBucketSize");
  put("fp16.loss_scale", o.lossScale, "lossScale");
  put("fp16.initial_scale_power", o.initialScalePower, "initialScalePower");
  put("fp16.loss_scale_window", o.lossScaleWindow, "lossScaleWindow");
  put("fp16.hysteresis", o.hysteresis, "hysteresis");
  put("fp16.min_loss_scale", o.minLossScale, "minLossScale");
  return keys;
}

/**
 * Writes each option's key into `config`: where the config leaves it out (or "auto") the option
 * fills it in; where it says something else, that is a problem (Lightning silently drops the
 * options when a config is given; here the two must agree).
 */
function mergeOptionKeys(config: Record<string, unknown>, keys: readonly OptionKey[], source: string, strategyName: string): ConfigProblem[] {
  const problems: ConfigProblem[] = [];
  for (const { path, value, option } of keys) {
    const parts = path.split(".");
    const leaf = parts.pop()!;
    const block = parts.reduce<Record<string, unknown>>((node, part) => {
      if (!isObject(node[part])) node[part] = {};
      return node[part] as Record<string, unknown>;
    }, config);
    const present = block[leaf];
    if (present === undefined || present === "auto") block[leaf] = value;
    else if (present !== value) {
      problems.push({
        code: "conflict",
        path,
        value: present,
        message:
          `${path} is ${JSON.stringify(present)} in ${source}, but the option ${option} (set by the strategy "${strategyName}" or its options) ` +
          `asks for ${JSON.stringify(value)}; make them agree${strategyName === "deepspeed" ? "" : ', or use the strategy "deepspeed", which takes its settings from the config'}.`,
      });
    }
  }
  return problems;
}

// ---- the plan --------------------------------------------------------------------------------------

const numberOrNull = (v: unknown): number | null => (typeof v === "number" ? v : null);
const booleanOrNull = (v: unknown): boolean | null => (typeof v === "boolean" ? v : null);

function offloadOf(block: unknown, deprecatedFlag: unknown): OffloadDevice {
  const device = isObject(block) ? block.device : undefined;
  if (device === "cpu" || device === "nvme") return device;
  // "none", and "auto" (which Accelerate fills from its own settings): nothing is offloaded.
  return deprecatedFlag === true ? "cpu" : "none";
}

function firstOf(block: Record<string, unknown>, keys: readonly string[]): unknown {
  for (const key of keys) if (block[key] !== undefined && block[key] !== "auto") return block[key];
  return undefined;
}

/**
 * The stage: a number in the config (or from the option), else 2 when there is no config or it
 * says "auto" (Lightning's default), else 0 (a config without one is DeepSpeed's "ZeRO off").
 */
function stageOf(zero: Record<string, unknown>, hadConfig: boolean): ZeroStage {
  const s = zero.stage;
  if (s === 0 || s === 1 || s === 2 || s === 3) return s;
  return s === "auto" || !hadConfig ? 2 : 0;
}

function readPlan(config: Record<string, unknown>, hadConfig: boolean, source: string, remoteDevice: OffloadTarget | null): ZeroPlan {
  const zero = config.zero_optimization as Record<string, unknown>;
  const stage = stageOf(zero, hadConfig);
  zero.stage = stage;
  const offloadOptimizer = offloadOf(zero.offload_optimizer, zero.cpu_offload);
  const offloadParam = offloadOf(zero.offload_param, zero.cpu_offload_param);
  const nvmeBlock = [offloadOptimizer === "nvme" ? zero.offload_optimizer : null, offloadParam === "nvme" ? zero.offload_param : null].find(isObject);
  const opt = isObject(zero.offload_optimizer) ? zero.offload_optimizer : {};
  const par = isObject(zero.offload_param) ? zero.offload_param : {};
  const aio = isObject(config.aio) ? config.aio : {};
  const nvme: NvmeTuning | null = !nvmeBlock
    ? null
    : Object.freeze({
        bufferCount:
          (offloadOptimizer === "nvme" ? numberOrNull(opt.buffer_count) : null) ??
          numberOrNull(par.buffer_count) ??
          (offloadOptimizer === "nvme" ? NVME_DEFAULTS.optimizerBufferCount : NVME_DEFAULTS.paramBufferCount),
        bufferSize: numberOrNull(par.buffer_size) ?? NVME_DEFAULTS.bufferSize,
        blockSize: numberOrNull(aio.block_size) ?? NVME_DEFAULTS.blockSize,
        threads: numberOrNull(aio.intra_op_parallelism) ?? numberOrNull(aio.thread_count) ?? NVME_DEFAULTS.threads,
        subGroupSize: numberOrNull(zero.sub_group_size) ?? NVME_DEFAULTS.subGroupSize,
      });
  const fp16 = isObject(config.fp16) ? config.fp16 : {};
  const bf16 = isObject(config.bf16) ? config.bf16 : isObject(config.bfloat16) ? config.bfloat16 : {};
  const scaler: LossScalerSettings = {
    lossScale: numberOrNull(fp16.loss_scale) ?? DEEPSPEED_FP16_DEFAULTS.lossScale,
    initialScalePower: numberOrNull(fp16.initial_scale_power) ?? DEEPSPEED_FP16_DEFAULTS.initialScalePower,
    lossScaleWindow: numberOrNull(fp16.loss_scale_window) ?? DEEPSPEED_FP16_DEFAULTS.lossScaleWindow,
    hysteresis: numberOrNull(fp16.hysteresis) ?? DEEPSPEED_FP16_DEFAULTS.hysteresis,
    consecutiveHysteresis: booleanOrNull(fp16.consecutive_hysteresis) ?? DEEPSPEED_FP16_DEFAULTS.consecutiveHysteresis,
    minLossScale: numberOrNull(fp16.min_loss_scale) ?? DEEPSPEED_FP16_DEFAULTS.minLossScale,
  };
  return Object.freeze({
    stage,
    offloadOptimizer,
    offloadParam,
    offloadRatio: numberOrNull(opt.ratio) ?? 1,
    remoteDevice,
    nvmePath: nvmeBlock && typeof nvmeBlock.nvme_path === "string" ? nvmeBlock.nvme_path : null,
    nvme,
    prefetchBucket: numberOrNull(firstOf(zero, ["stage3_prefetch_bucket_size", "prefetch_bucket_size"])),
    maxLiveParameters: numberOrNull(firstOf(zero, ["stage3_max_live_parameters", "max_live_parameters"])),
    maxReuseDistance: numberOrNull(firstOf(zero, ["stage3_max_reuse_distance", "max_reuse_distance"])),
    persistenceThreshold: numberOrNull(firstOf(zero, ["stage3_param_persistence_threshold", "param_persistence_threshold"])),
    overlapComm: booleanOrNull(zero.overlap_comm),
    gradientClipping: numberOrNull(config.gradient_clipping),
    fp16Enabled: booleanOrNull(fp16.enabled),
    bf16Enabled: booleanOrNull(bf16.enabled),
    lossScaler: Object.freeze(scaler),
    batch: Object.freeze({ train: numberOrNull(config.train_batch_size), micro: numberOrNull(config.train_micro_batch_size_per_gpu) }),
    config: deepFreeze(config),
    source,
  });
}

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/** Problems of the user's config that are Fulgur's (or Lightning's) rather than DeepSpeed's. */
function fulgurProblems(config: Record<string, unknown>): ConfigProblem[] {
  const gas = config.gradient_accumulation_steps;
  if (gas === undefined || gas === "auto") return [];
  return [
    {
      code: "conflict",
      path: "gradient_accumulation_steps",
      value: gas,
      suggestion: '"auto"',
      message:
        `gradient_accumulation_steps is ${JSON.stringify(gas)}; gradient accumulation comes from the Trainer's accumulateGradBatches ` +
        '(as in Lightning): remove the key or set it to "auto", and pass accumulateGradBatches to the Trainer.',
    },
  ];
}

/**
 * Resolves the options and the config into a plan, or throws one ZeroConfigError listing every
 * problem (the schema's, the options' disagreements with the config, and Fulgur's own).
 */
export function resolvePlan(options: ResolvedDeepSpeedOptions, strategyName: string, env: NodeJS.ProcessEnv = process.env): ZeroPlan {
  const loaded = loadConfig(options.config, strategyName, env);
  const problems: ConfigProblem[] = [];
  const config: Record<string, unknown> = {};
  if (loaded.config !== null) {
    problems.push(...validate(loaded.config).problems);
    if (!isObject(loaded.config)) {
      const message = `The config is ${JSON.stringify(loaded.config)}; a DeepSpeed config is a JSON object.`;
      throw new ZeroConfigError(strategyName, loaded.source, problems.length > 0 ? problems : [{ code: "invalid-value", path: "", value: loaded.config, message }]);
    }
    problems.push(...fulgurProblems(loaded.config));
    Object.assign(config, loaded.config);
  }
  // The deprecated boolean form: true is stage 1, false is ZeRO off.
  if (typeof config.zero_optimization === "boolean") config.zero_optimization = { stage: config.zero_optimization ? 1 : 0 };
  if (!isObject(config.zero_optimization)) config.zero_optimization = {};
  problems.push(...mergeOptionKeys(config, optionKeys(options, strategyName), loaded.source, strategyName));
  if (problems.length > 0) throw new ZeroConfigError(strategyName, loaded.source, problems);
  return readPlan(config, loaded.config !== null, loaded.source, options.remoteDevice);
}
