/**
 * The options of the FSDP strategies (Lightning's FSDPStrategy over FSDP2), validated once at
 * construction with the kit's option parser: a bad option names the field, the value and what is
 * allowed, before any process starts. Parsed options are frozen.
 */
import type { Module } from "@fulgur/nn";
import type { ShardingStrategy } from "@fulgur/sharding";
import { PARALLEL_ALLOWED, PARALLEL_DEFAULTS, PARALLEL_SHAPE, type ParallelOptions, StrategyOptionError, parseStrategyOptions } from "@fulgur/strategy-kit";
import { DTYPES, type DType } from "@fulgur/tensor";
import { z } from "zod";

/** A module class, for policies given as sets of classes. */
export type ModuleClass = abstract new (...args: never[]) => Module;

/** Which modules become units: a set of classes, or a function of the module and its parameter count. */
export type WrapPolicy = readonly (ModuleClass | string)[] | ((module: Module, numParameters: number) => boolean);

export interface FSDPMixedPrecision {
  /** dtype of the gathered parameters the units compute with (default: the parameters' own). */
  readonly paramDtype?: DType;
  /** dtype gradients are reduce-scattered in (default: paramDtype). */
  readonly reduceDtype?: DType;
}

export interface FSDPOptions extends ParallelOptions {
  /** Which modules are sharded units (default: every element of a ModuleList, e.g. each transformer block). */
  readonly autoWrapPolicy?: WrapPolicy;
  readonly shardingStrategy?: ShardingStrategy;
  /**
   * Free a unit's gathered parameters after its forward (default: true for FULL_SHARD and
   * HYBRID_SHARD). An integer k (FULL_SHARD; FSDP2's int form) keeps each unit sharded over groups
   * of k consecutive ranks between forward and backward, e.g. the GPUs of a node: backward gathers
   * within the group, for k times a shard's memory. k must divide the world size, 1 < k < world.
   */
  readonly reshardAfterForward?: boolean | number;
  /** Modules whose forward is recomputed in backward instead of keeping activations (a set of classes, or a function). */
  readonly activationCheckpointingPolicy?: WrapPolicy;
  /** Keep the parameter slices and optimizer state in host memory (the GPU holds only what a unit computes with). */
  readonly cpuOffload?: boolean;
  /**
   * With units offloaded to a GPU's host: about that share (0 to 1) of the offloaded optimizer
   * step updated on the GPU, by whole units whose gradients stay on the GPU and whose host-resident
   * state is streamed up and back in pieces while the CPU's threads update the rest (Fulgur's own,
   * as ZeRO's option of the same name). Default 0.
   */
  readonly offloadStepShare?: number;
  /**
   * With units offloaded: each offloaded unit in host memory is updated by the CPU's threads as
   * soon as its gradients are in, beside the rest of backward, instead of after it (Fulgur's own,
   * as ZeRO's option of the same name). The same bits. Needs AdamW (or Adam without weight decay),
   * and no gradient clipping or fp16 loss scaling. Default false.
   */
  readonly offloadStepInBackward?: boolean;
  readonly mixedPrecision?: FSDPMixedPrecision;
  /** Units gathered ahead of the computing one, forward and backward (default 1; 0 turns prefetch off). */
  readonly limitAllGathers?: number;
  /** Prefetch the next unit during forward (default true). */
  readonly forwardPrefetch?: boolean;
  /** Prefetch the previous unit during backward (default "BACKWARD_PRE"; null turns it off). */
  readonly backwardPrefetch?: "BACKWARD_PRE" | "BACKWARD_POST" | null;
  /** "full": rank 0 writes one file with everything; "sharded": every rank writes its slices (default "full"). */
  readonly stateDictType?: "full" | "sharded";
  /** [replicas, shards] for HYBRID_SHARD (default: [nodes, devices per node]). */
  readonly deviceMesh?: readonly [number, number] | null;
}

export type ResolvedFSDPOptions = Readonly<
  Required<Omit<FSDPOptions, "reshardAfterForward" | "activationCheckpointingPolicy" | "mixedPrecision" | "deviceMesh" | "autoWrapPolicy">>
> & {
  readonly autoWrapPolicy: WrapPolicy | null;
  readonly reshardAfterForward: boolean | number | null;
  readonly activationCheckpointingPolicy: WrapPolicy | null;
  readonly mixedPrecision: Readonly<FSDPMixedPrecision>;
  readonly deviceMesh: readonly [number, number] | null;
};

export const FSDP_DEFAULTS: ResolvedFSDPOptions = Object.freeze({
  ...PARALLEL_DEFAULTS,
  autoWrapPolicy: null,
  shardingStrategy: "FULL_SHARD",
  reshardAfterForward: null,
  activationCheckpointingPolicy: null,
  cpuOffload: false,
  offloadStepShare: 0,
  offloadStepInBackward: false,
  mixedPrecision: Object.freeze({}),
  limitAllGathers: 1,
  forwardPrefetch: true,
  backwardPrefetch: "BACKWARD_PRE",
  stateDictType: "full",
  deviceMesh: null,
});

const policy = z.union([
  z.array(z.union([z.string().min(1), z.custom<ModuleClass>((v) => typeof v === "function")])),
  z.custom<(m: Module, n: number) => boolean>((v) => typeof v === "function"),
]);
const dtype = z.enum(DTYPES as unknown as [DType, ...DType[]]);
const reshardAfterForward = z.union([z.boolean(), z.number().int().min(2)]);
const mixedPrecision = z.strictObject({ paramDtype: dtype.optional(), reduceDtype: dtype.optional() });

const schema = z.strictObject({
  ...PARALLEL_SHAPE,
  autoWrapPolicy: policy.nullable().optional(),
  shardingStrategy: z.enum(["FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD"]).optional(),
  reshardAfterForward: reshardAfterForward.nullable().optional(),
  activationCheckpointingPolicy: policy.nullable().optional(),
  cpuOffload: z.boolean().optional(),
  offloadStepShare: z.number().min(0).max(1).optional(),
  offloadStepInBackward: z.boolean().optional(),
  mixedPrecision: mixedPrecision.optional(),
  limitAllGathers: z.number().int().min(0).optional(),
  forwardPrefetch: z.boolean().optional(),
  backwardPrefetch: z.enum(["BACKWARD_PRE", "BACKWARD_POST"]).nullable().optional(),
  stateDictType: z.enum(["full", "sharded"]).optional(),
  deviceMesh: z.tuple([z.number().int().positive(), z.number().int().positive()]).nullable().optional(),
});

const ALLOWED: Record<keyof FSDPOptions, string> = {
  ...PARALLEL_ALLOWED,
  autoWrapPolicy: "an array of module classes or class names, or a function (module, numParameters) => boolean",
  shardingStrategy: 'one of "FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD"',
  reshardAfterForward: "true, false, or an integer k >= 2 dividing the world size (groups of k consecutive ranks keep each unit sharded between forward and backward)",
  activationCheckpointingPolicy: "an array of module classes or class names, or a function (module, numParameters) => boolean",
  cpuOffload: "true or false",
  offloadStepShare: "a number from 0 to 1 (the share of the offloaded optimizer step run on the device)",
  offloadStepInBackward: "true or false (update offloaded units beside backward)",
  mixedPrecision: `an object { paramDtype?, reduceDtype? } with dtypes among ${DTYPES.join(", ")}`,
  limitAllGathers: "a non-negative integer: units gathered ahead of the computing one (default 1)",
  forwardPrefetch: "true or false",
  backwardPrefetch: '"BACKWARD_PRE", "BACKWARD_POST" or null',
  stateDictType: '"full" or "sharded"',
  deviceMesh: "[replicas, shards]: two positive integers whose product is the world size",
};

/** A bad FSDP option; `option` names it. */
export class FSDPOptionError extends StrategyOptionError {
  override readonly name = "FSDPOptionError";
}

export function parseFSDPOptions(input: unknown, strategyName = "fsdp"): ResolvedFSDPOptions {
  const parsed = parseStrategyOptions<FSDPOptions>(
    {
      schema,
      allowed: ALLOWED,
      defaults: FSDP_DEFAULTS as unknown as Required<FSDPOptions>,
      error: (option, message) => new FSDPOptionError(option, message),
    },
    input,
    strategyName,
  );
  const mp = parsed.mixedPrecision ?? {};
  return Object.freeze({ ...parsed, mixedPrecision: Object.freeze({ ...mp }) }) as unknown as ResolvedFSDPOptions;
}

/**
 * One unit's own options, given to `fullyShard` (FSDP2's per-call `fully_shard` options); each one
 * given replaces the strategy's for that unit, and a mixedPrecision field left out is the
 * strategy's.
 */
export interface FullyShardOptions {
  /** As the strategy's option, for this unit: e.g. false for the last block, whose backward comes right after its forward. */
  readonly reshardAfterForward?: boolean | number;
  readonly mixedPrecision?: FSDPMixedPrecision;
  /**
   * This unit's slices, gradient slice and optimizer state in host memory (true) or on the device
   * (false), whatever the strategy's cpuOffload (FSDP2's per-call `offload_policy`): e.g. the
   * largest units offloaded and the rest kept on the device. See [Note: per-unit offload] in strategy.ts.
   */
  readonly cpuOffload?: boolean;
}

/** `fullyShard`'s options, checked and frozen; null: the strategy's. */
export interface ResolvedFullyShardOptions {
  readonly reshardAfterForward: boolean | number | null;
  readonly mixedPrecision: Readonly<FSDPMixedPrecision>;
  readonly cpuOffload: boolean | null;
}

const UNIT_DEFAULTS: ResolvedFullyShardOptions = Object.freeze({ reshardAfterForward: null, mixedPrecision: Object.freeze({}), cpuOffload: null });

const unitSchema = z.strictObject({ reshardAfterForward: reshardAfterForward.optional(), mixedPrecision: mixedPrecision.optional(), cpuOffload: z.boolean().optional() });

const UNIT_ALLOWED: Record<keyof FullyShardOptions, string> = {
  reshardAfterForward: ALLOWED.reshardAfterForward,
  mixedPrecision: ALLOWED.mixedPrecision,
  cpuOffload: "true or false (this unit's slices and optimizer state in host memory, or on the device)",
};

/** Checks `fullyShard`'s options once, when it is called; `what` names the call in errors. */
export function parseFullyShardOptions(input: unknown, what: string): ResolvedFullyShardOptions {
  const parsed = parseStrategyOptions<FullyShardOptions>(
    {
      schema: unitSchema,
      allowed: UNIT_ALLOWED,
      defaults: UNIT_DEFAULTS as unknown as Required<FullyShardOptions>,
      error: (option, message) => new FSDPOptionError(option, message),
    },
    input,
    what,
  );
  return Object.freeze({ ...parsed, mixedPrecision: Object.freeze({ ...parsed.mixedPrecision }) }) as unknown as ResolvedFullyShardOptions;
}
