/**
 * The options of the DeepSpeed strategies, Lightning's `DeepSpeedStrategy` arguments in camel case,
 * validated once at construction with the kit's option parser (DESIGN.md decision 10): a bad option
 * names the field, the value and what is allowed, before any process starts. Parsed options are
 * frozen. An option left out is `null` here, not a default: config.ts turns the options that were
 * given into DeepSpeed config keys and merges them with the config, so an option and a config that
 * disagree are told apart from an option nobody set.
 */
import type { Module } from "@fulgur/nn";
import {
  type OptionSpec,
  PARALLEL_ALLOWED,
  PARALLEL_DEFAULTS,
  PARALLEL_SHAPE,
  type ParallelOptions,
  StrategyOptionError,
  parseStrategyOptions,
} from "@fulgur/strategy-kit";
import { DTYPES, type DType } from "@fulgur/tensor";
import { z } from "zod";

/** 0: no sharding (data parallel); 1: optimizer state; 2: and gradients; 3: and parameters. */
export type ZeroStage = 0 | 1 | 2 | 3;

/** Where offloaded state goes: host memory, or files on a drive (through host memory). */
export type OffloadTarget = "cpu" | "nvme";

/** A module class, for policies given as sets of classes. */
export type ModuleClass = abstract new (...args: never[]) => Module;

/** Which modules become units (FSDP's option of the same name): classes or class names, or a function. */
export type WrapPolicy = readonly (ModuleClass | string)[] | ((module: Module, numParameters: number) => boolean);

export interface DeepSpeedOptions extends ParallelOptions {
  /**
   * A DeepSpeed config: the path of a JSON file, or the object. Default: the file named by the
   * environment variable FULGUR_DEEPSPEED_CONFIG_PATH when it is set, else none (the options alone).
   */
  readonly config?: string | Readonly<Record<string, unknown>> | null;
  /** The ZeRO stage; default: the config's, else 2 (Lightning's default). */
  readonly stage?: ZeroStage;
  /** Keep optimizer state (with the parameter slices and gradients) in host memory. */
  readonly offloadOptimizer?: boolean;
  /** Stage 3: keep the parameter slices in host memory; units go up to the device to compute. */
  readonly offloadParameters?: boolean;
  /** Where offloadOptimizer puts the state (default "cpu"). */
  readonly offloadOptimizerDevice?: OffloadTarget;
  /** Where offloadParameters puts the slices (default "cpu"). */
  readonly offloadParamsDevice?: OffloadTarget;
  /** Where the model is first made (DeepSpeed's zero.Init): here always the meta device, unit by unit (each slice going to its offload tier as it is made). */
  readonly remoteDevice?: OffloadTarget | null;
  /** Directory for NVMe offload (default "/local_nvme"): each rank makes its own directory of swap files in it. */
  readonly nvmePath?: string;
  /** Gradients in one contiguous buffer per unit: always the case here (false is reported as having no effect). */
  readonly contiguousGradients?: boolean;
  /** Overlap communication with compute (false: no unit is gathered ahead of the one computing). */
  readonly overlapComm?: boolean;
  /** Elements gathered at once; units are the buckets here, so it has no effect on what is sent together. */
  readonly allgatherBucketSize?: number;
  /** Elements reduced at once; units are the buckets here. */
  readonly reduceBucketSize?: number;
  /** fp16 ("16-mixed"): a static loss scale, or 0 for dynamic scaling (DeepSpeed's rule). */
  readonly lossScale?: number;
  /** fp16: the dynamic scale starts at 2^initialScalePower (default 16). */
  readonly initialScalePower?: number;
  /** fp16: clean steps before the dynamic scale doubles (default 1000). */
  readonly lossScaleWindow?: number;
  /** fp16: overflows in a row before the scale halves (default 2). */
  readonly hysteresis?: number;
  /** fp16: the dynamic scale never goes below this (default 1). */
  readonly minLossScale?: number;
  /** Which modules are units (default: every element of a ModuleList, e.g. each transformer block). */
  readonly autoWrapPolicy?: WrapPolicy | null;
  /**
   * With offload on: keep on the device whatever fits there (Fulgur's own; see the guide's "Keep on
   * the device what fits"). "auto": the device's free memory as the accelerator reports it; a
   * number: the bytes of device memory the run may use. From it the strategy's estimate of what
   * training needs on the device anyway (activations, gathered units, buffers) is taken; in what is
   * left, units keep their gathered parameters on the device, then their slices and optimizer state.
   */
  readonly offloadKeep?: "auto" | number | null;
  /**
   * With NVMe offload: keep in host memory, instead of on disk, the offloaded units whose slices
   * and optimizer state fit there (Fulgur's own; the guide's "GPU, host and disk together"), so a
   * model uses all three. "auto": the host's available memory shared by this node's ranks; a
   * number: the bytes of host memory each rank may use. From it the strategy's estimate of what
   * the host holds anyway (gradient slices, the pieces the step reads in) is taken; in what is
   * left, units are kept from the last one back, the first ones going to disk.
   */
  readonly offloadKeepHost?: "auto" | number | null;
  /**
   * With offload to a GPU's host: about that share (0 to 1) of the offloaded optimizer step
   * updated on the GPU, by whole units whose gradients stay on the GPU and whose host-resident
   * state is streamed up and back in pieces while the CPU's threads update the rest (Fulgur's own;
   * the guide's "The step on CPU and GPU together"). The optimizer state stays in host memory.
   * Absent, null or 0: the CPU's threads update all of it.
   */
  readonly offloadStepShare?: number | null;
  /**
   * With offload: each offloaded unit in host memory is updated by the CPU's threads as soon as its
   * gradients are in, beside the rest of backward, instead of after it (Fulgur's own; the guide's
   * "The step beside backward"). The numbers are the same bits. Needs AdamW (or Adam without
   * weight decay), and no gradient clipping or fp16 loss scaling, whose factor needs every
   * gradient first. Absent, null or false: the step waits for backward.
   */
  readonly offloadStepInBackward?: boolean | null;
  /**
   * The dtype units are gathered and compute in, and the one gradients are reduced in (FSDP2's
   * `MixedPrecisionPolicy`; DeepSpeed's bf16 and fp16 modes hold the model's parameters in the
   * half dtype the same way), over fp32 master slices and optimizer state. Absent or null: units
   * are gathered in fp32 and the precision's autocast casts what it computes with. Offloaded to a
   * GPU's host, a unit with a `paramDtype` keeps its slice in that dtype in host memory too and
   * uploads it: half the bytes of fp32 over the bus.
   */
  readonly mixedPrecision?: { readonly paramDtype?: DType; readonly reduceDtype?: DType } | null;
}

/** The ZeRO options proper (everything but the launch options ParallelOptions shares). */
export type ZeroOptionName = Exclude<keyof DeepSpeedOptions, keyof ParallelOptions>;

/** Parsed options: the launch options with their defaults, the rest null where not given. */
export type ResolvedDeepSpeedOptions = Readonly<Required<ParallelOptions>> & {
  readonly [K in ZeroOptionName]-?: Exclude<DeepSpeedOptions[K], undefined> | null;
};

const NOT_GIVEN: { readonly [K in ZeroOptionName]: null } = {
  config: null,
  stage: null,
  offloadOptimizer: null,
  offloadParameters: null,
  offloadOptimizerDevice: null,
  offloadParamsDevice: null,
  remoteDevice: null,
  nvmePath: null,
  contiguousGradients: null,
  overlapComm: null,
  allgatherBucketSize: null,
  reduceBucketSize: null,
  lossScale: null,
  initialScalePower: null,
  lossScaleWindow: null,
  hysteresis: null,
  minLossScale: null,
  autoWrapPolicy: null,
  offloadKeep: null,
  offloadKeepHost: null,
  offloadStepShare: null,
  offloadStepInBackward: null,
  mixedPrecision: null,
};

/** A bad DeepSpeed strategy option; `option` names it. */
export class DeepSpeedOptionError extends StrategyOptionError {
  override readonly name = "DeepSpeedOptionError";
}

export const DEEPSPEED_DEFAULTS: ResolvedDeepSpeedOptions = Object.freeze({ ...PARALLEL_DEFAULTS, ...NOT_GIVEN });

const target = z.enum(["cpu", "nvme"]);
const elements = z.number().int().positive();
const policy = z.union([
  z.array(z.union([z.string().min(1), z.custom<ModuleClass>((v) => typeof v === "function")])),
  z.custom<(m: Module, n: number) => boolean>((v) => typeof v === "function"),
]);

const FLOATING = DTYPES.filter((d) => d === "float32" || d === "bfloat16" || d === "float16");
const floating = z.enum(FLOATING as unknown as [DType, ...DType[]]);

const schema = z.strictObject({
  ...PARALLEL_SHAPE,
  config: z.union([z.string().min(1), z.record(z.string(), z.unknown())]).nullable().optional(),
  stage: z.union([z.literal(0), z.literal(1), z.literal(2), z.literal(3)]).optional(),
  offloadOptimizer: z.boolean().optional(),
  offloadParameters: z.boolean().optional(),
  offloadOptimizerDevice: target.optional(),
  offloadParamsDevice: target.optional(),
  remoteDevice: target.nullable().optional(),
  nvmePath: z.string().min(1).optional(),
  contiguousGradients: z.boolean().optional(),
  overlapComm: z.boolean().optional(),
  allgatherBucketSize: elements.optional(),
  reduceBucketSize: elements.optional(),
  lossScale: z.number().min(0).finite().optional(),
  initialScalePower: z.number().int().min(0).max(63).optional(),
  lossScaleWindow: z.number().int().positive().optional(),
  hysteresis: z.number().int().positive().optional(),
  minLossScale: z.number().positive().finite().optional(),
  autoWrapPolicy: policy.nullable().optional(),
  offloadKeep: z.union([z.literal("auto"), z.number().int().positive().finite()]).nullable().optional(),
  offloadKeepHost: z.union([z.literal("auto"), z.number().int().positive().finite()]).nullable().optional(),
  offloadStepShare: z.number().min(0).max(1).nullable().optional(),
  offloadStepInBackward: z.boolean().nullable().optional(),
  mixedPrecision: z.strictObject({ paramDtype: floating.optional(), reduceDtype: floating.optional() }).nullable().optional(),
});

const ALLOWED: Record<keyof DeepSpeedOptions, string> = {
  ...PARALLEL_ALLOWED,
  config: "the path of a DeepSpeed JSON config, or the config object",
  stage: "0, 1, 2 or 3",
  offloadOptimizer: "true or false",
  offloadParameters: "true or false",
  offloadOptimizerDevice: '"cpu" or "nvme"',
  offloadParamsDevice: '"cpu" or "nvme"',
  remoteDevice: '"cpu", "nvme" or null',
  nvmePath: "a directory path",
  contiguousGradients: "true or false",
  overlapComm: "true or false",
  allgatherBucketSize: "a positive integer number of elements",
  reduceBucketSize: "a positive integer number of elements",
  lossScale: "a number ≥ 0 (0: dynamic loss scaling)",
  initialScalePower: "an integer from 0 to 63",
  lossScaleWindow: "a positive integer number of steps",
  hysteresis: "a positive integer number of overflows",
  minLossScale: "a number greater than 0",
  autoWrapPolicy: "an array of module classes or class names, or a function (module, numParameters) => boolean",
  offloadKeep: '"auto" (the device\'s free memory), a positive integer number of bytes of device memory, or null',
  offloadKeepHost: '"auto" (the host\'s available memory over this node\'s ranks), a positive integer number of bytes of host memory per rank, or null',
  offloadStepShare: "a number from 0 to 1 (the share of the offloaded optimizer step run on the device), or null",
  offloadStepInBackward: "true, false or null (update offloaded units beside backward)",
  mixedPrecision: `an object { paramDtype?, reduceDtype? } with dtypes among ${FLOATING.join(", ")}, or null`,
};

const SPEC: OptionSpec<DeepSpeedOptions> = {
  schema,
  allowed: ALLOWED,
  defaults: DEEPSPEED_DEFAULTS as unknown as Required<DeepSpeedOptions>,
  error: (option, message) => new DeepSpeedOptionError(option, message),
};

/** Validates the options (launch options get their defaults, the others stay null when not given). */
export function parseDeepSpeedOptions(input: unknown, strategyName = "deepspeed"): ResolvedDeepSpeedOptions {
  return parseStrategyOptions(SPEC, input, strategyName) as unknown as ResolvedDeepSpeedOptions;
}
