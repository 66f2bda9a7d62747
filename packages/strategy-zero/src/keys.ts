/**
 * The DeepSpeed config keys Fulgur acts on, as one explicit table, and the one warning that names
 * every other key a config sets. DeepSpeed drops most unknown keys without a word; Fulgur accepts
 * every key the schema accepts (so a real config runs), but never ignores one silently: a key
 * outside this table, or one whose value or setting Fulgur cannot follow in this run, is named at
 * start (stderr, rank 0) with the reason.
 */
import type { ZeroStage } from "./api";
import { isObject } from "./config";

/** What decides whether a key acts in a run: set at setup, when the precision is known. */
export interface RunFacts {
  readonly stage: ZeroStage;
  /** The Trainer's precision ("32-true", "bf16-mixed", "16-mixed", ...). */
  readonly precision: string;
  /** Whether the precision's loss scaler could be given DeepSpeed's settings. */
  readonly scalerReachable: boolean;
  /** Whether something is offloaded to NVMe (the aio block and sub_group_size act only then). */
  readonly nvme?: boolean;
}

export interface KeyRule {
  /** What Fulgur does with the key. */
  readonly does: string;
  /** Why the key has no effect in this run, when its value or the run's setting leaves it none. */
  readonly idleWhen?: (value: unknown, run: RunFacts, block: Readonly<Record<string, unknown>>) => string | undefined;
}

const stage3Only = (_v: unknown, run: RunFacts): string | undefined => (run.stage === 3 ? undefined : `stage 3 only; this run is stage ${run.stage}`);
const onlyTrue = (why: string) => (v: unknown): string | undefined => (v === false ? why : undefined);
const fp16Scaling = (_v: unknown, run: RunFacts): string | undefined =>
  run.precision !== "16-mixed"
    ? `loss scaling is for precision "16-mixed"; this run's is "${run.precision}"`
    : run.scalerReachable
      ? undefined
      : "the precision has no loss scaler Fulgur can set";
const nvmeOnly = (_v: unknown, _run: RunFacts, block: Readonly<Record<string, unknown>>): string | undefined =>
  block.device === "nvme" ? undefined : "used only with device \"nvme\"";
const withNvme = (why: string) => (_v: unknown, run: RunFacts): string | undefined => (run.nvme ? undefined : why);
const NO_NVME = "acts only with NVMe offload; nothing is offloaded to NVMe in this run";
const NO_KERNEL_AIO = "Node has no asynchronous kernel I/O (libaio, io_uring) or O_DIRECT: I/O threads make plain positional reads and writes";
const SAVE_FULL = "true: checkpoints hold the full state dict, streamed into one file unit by unit (rank 0 holds one gathered unit at a time; in the master dtype)";
const ALWAYS_FULL = onlyTrue("checkpoints are always full state dicts here (there is no sharded format yet)");
const PREFETCH = "stage 3: the units gathered ahead of the computing one are those whose parameters fit in it";
const LIVE = "stage 3: caps the prefetch depth, and the units kept for stage3_max_reuse_distance, so gathered units stay within it";
const PERSIST = "stage 3: a wrapped unit of fewer parameters than this stays gathered from step to step (its slices and optimizer state sharded)";
const persistence = (v: unknown, run: RunFacts): string | undefined => stage3Only(v, run) ?? (typeof v === "number" ? undefined : '"auto" is a value the Hugging Face Trainer fills; Fulgur fills none, so no unit persists');
const REUSE = "stage 3: from the last unit back, a unit whose backward comes within this many parameters of its forward stays gathered between the two (stage3_max_live_parameters, default 1e9, capping them)";
const BUCKET = "units are the buckets: each unit is gathered, and its gradients reduce-scattered, in one collective";
const SCALER = "the 16-mixed precision's loss scaler, which follows DeepSpeed's rule";

/** Every key Fulgur acts on, by dotted path, with what it does (the README's table is this one). */
export const HONOURED_KEYS: Readonly<Record<string, KeyRule>> = Object.freeze({
  $schema: { does: "an editor hint; nothing to do at run time" },
  train_batch_size: { does: 'checked at setup: train_batch_size = micro-batch × accumulateGradBatches × world size; "auto": that product' },
  train_micro_batch_size_per_gpu: { does: 'the loader\'s batch size is the micro-batch: "auto" takes it, a number must equal it' },
  gradient_accumulation_steps: { does: '"auto" only: the Trainer\'s accumulateGradBatches (a number is refused, as in Lightning)' },
  gradient_clipping: { does: "the step's clipping by global norm (0: none); \"auto\" or absent: the Trainer's gradientClipVal; both set and different: refused" },
  "fp16.enabled": { does: 'must agree with the Trainer\'s precision ("16-mixed"); "auto": taken from it' },
  "fp16.loss_scale": { does: SCALER, idleWhen: fp16Scaling },
  "fp16.initial_scale_power": { does: SCALER, idleWhen: fp16Scaling },
  "fp16.loss_scale_window": { does: SCALER, idleWhen: fp16Scaling },
  "fp16.hysteresis": { does: SCALER, idleWhen: fp16Scaling },
  "fp16.consecutive_hysteresis": { does: SCALER, idleWhen: fp16Scaling },
  "fp16.min_loss_scale": { does: SCALER, idleWhen: fp16Scaling },
  "bf16.enabled": { does: 'must agree with the Trainer\'s precision ("bf16-mixed" or "bf16-true"); "auto": taken from it' },
  "bfloat16.enabled": { does: "the old name of bf16.enabled" },
  zero_allow_untested_optimizer: { does: "true: any optimizer (every Fulgur optimizer steps over slices)", idleWhen: onlyTrue("every Fulgur optimizer is allowed") },
  "zero_optimization.stage": { does: "the ZeRO stage: 0 replicated, 1 and 2 kept gathered with sharded gradients and optimizer state, 3 fully sharded units" },
  "zero_optimization.offload_optimizer.device": { does: '"cpu": slices, gradients and optimizer state in host memory (the engine\'s offload); "nvme": the optimizer state in files under nvme_path, read in for the step piece by piece' },
  "zero_optimization.offload_optimizer.nvme_path": { does: "NVMe offload: each rank makes its own directory under it, removed at teardown", idleWhen: nvmeOnly },
  "zero_optimization.offload_optimizer.buffer_count": { does: "NVMe offload: reads and writes in flight at most", idleWhen: nvmeOnly },
  "zero_optimization.offload_optimizer.ratio": {
    does: "the share of the optimizer state offloaded, by whole units in order (a unit offloaded while the offloaded elements stay within ratio × all); the other units keep slices, gradients and optimizer state on the device",
    idleWhen: (_v, _run, block) => (block.device === "cpu" || block.device === "nvme" ? undefined : 'acts only with offload_optimizer.device "cpu" or "nvme"'),
  },
  "zero_optimization.offload_param.device": {
    does: '"cpu" (stage 3): parameter slices in host memory, the optimizer state with them; "nvme": the slices in files too, read in for each gather and the step',
    idleWhen: (v, run) => (run.stage < 3 && v !== "none" && v !== "auto" ? `parameters are offloaded only at stage 3; this run is stage ${run.stage}` : undefined),
  },
  "zero_optimization.offload_param.nvme_path": { does: "NVMe offload: each rank makes its own directory under it, removed at teardown", idleWhen: nvmeOnly },
  "zero_optimization.offload_param.buffer_count": { does: "NVMe offload: reads and writes in flight at most (offload_optimizer's when both are given)", idleWhen: nvmeOnly },
  "zero_optimization.offload_param.buffer_size": { does: "NVMe offload: bytes per read or write at most", idleWhen: nvmeOnly },
  "zero_optimization.sub_group_size": { does: "NVMe offload: elements of slices stepped together (whole units), the next piece read while one is updated", idleWhen: withNvme("the optimizer steps over whole slices") },
  "aio.block_size": { does: "NVMe offload: file offsets are multiples of it", idleWhen: withNvme(NO_NVME) },
  "aio.thread_count": { does: "NVMe offload: I/O worker threads", idleWhen: withNvme(NO_NVME) },
  "aio.intra_op_parallelism": { does: "NVMe offload: I/O worker threads (before thread_count)", idleWhen: withNvme(NO_NVME) },
  "zero_optimization.cpu_offload": { does: "the old form of offload_optimizer.device \"cpu\"" },
  "zero_optimization.cpu_offload_param": { does: "the old form of offload_param.device \"cpu\"", idleWhen: stage3Only },
  "zero_optimization.stage3_prefetch_bucket_size": { does: PREFETCH, idleWhen: stage3Only },
  "zero_optimization.prefetch_bucket_size": { does: PREFETCH, idleWhen: stage3Only },
  "zero_optimization.stage3_max_live_parameters": { does: LIVE, idleWhen: stage3Only },
  "zero_optimization.max_live_parameters": { does: LIVE, idleWhen: stage3Only },
  "zero_optimization.stage3_param_persistence_threshold": { does: PERSIST, idleWhen: persistence },
  "zero_optimization.param_persistence_threshold": { does: PERSIST, idleWhen: persistence },
  "zero_optimization.stage3_max_reuse_distance": { does: REUSE, idleWhen: stage3Only },
  "zero_optimization.max_reuse_distance": { does: REUSE, idleWhen: stage3Only },
  "zero_optimization.overlap_comm": { does: "true: units are gathered ahead of compute and each unit's reduce-scatter starts when its backward ends; false: nothing is gathered ahead" },
  "zero_optimization.reduce_bucket_size": { does: BUCKET },
  "zero_optimization.allgather_bucket_size": { does: BUCKET },
  "zero_optimization.contiguous_gradients": { does: "true: a unit's gradients are views of one flat buffer (always so here)", idleWhen: onlyTrue("gradients are always contiguous here") },
  "zero_optimization.reduce_scatter": { does: "true: gradients are reduce-scattered (stages 1 to 3; stage 0 all-reduces)", idleWhen: onlyTrue("gradients are always reduce-scattered here") },
  "zero_optimization.allgather_partitions": { does: "true: updated slices are all-gathered (stages 1 to 3)", idleWhen: onlyTrue("slices are always all-gathered here") },
  "zero_optimization.stage3_gather_16bit_weights_on_model_save": { does: SAVE_FULL, idleWhen: ALWAYS_FULL },
  "zero_optimization.gather_16bit_weights_on_model_save": { does: SAVE_FULL, idleWhen: ALWAYS_FULL },
  "zero_optimization.stage3_gather_fp16_weights_on_model_save": { does: SAVE_FULL, idleWhen: ALWAYS_FULL },
});

/** Why some well-known keys have no effect (others: "Fulgur does not act on it"). */
const REASONS: Readonly<Record<string, string>> = {
  optimizer: "the optimizer comes from configureOptimizers",
  scheduler: "the learning-rate schedule comes from configureOptimizers",
  activation_checkpointing: "recompute with checkpoint() from @fulgur/tensor in the model",
  steps_per_print: "logging is the Trainer's (logEveryNSteps)",
  wall_clock_breakdown: "logging is the Trainer's",
  communication_data_type: "gradients are reduced in the parameters' dtype",
  "aio.queue_depth": NO_KERNEL_AIO,
  "aio.single_submit": NO_KERNEL_AIO,
  "aio.overlap_events": NO_KERNEL_AIO,
  "aio.use_gds": "no GPUDirect Storage: files are read into host memory",
  "fp16.auto_cast": "casting is the precision's (autocast)",
};

/** Every proper prefix of a table key: the blocks the walk goes into. */
const BLOCKS: ReadonlySet<string> = new Set(
  Object.keys(HONOURED_KEYS).flatMap((key) => key.split(".").slice(0, -1).map((_, i, parts) => parts.slice(0, i + 1).join("."))),
);

export interface IdleKey {
  readonly path: string;
  readonly why: string;
}

/**
 * The keys of `config` that have no effect in this run: outside the table (a whole block when
 * nothing in it acts), or in it with a value or setting Fulgur cannot follow.
 */
export function keysWithoutEffect(config: Readonly<Record<string, unknown>>, run: RunFacts): IdleKey[] {
  const idle: IdleKey[] = [];
  const visit = (block: Readonly<Record<string, unknown>>, prefix: string): void => {
    for (const [key, value] of Object.entries(block)) {
      const path = prefix === "" ? key : `${prefix}.${key}`;
      const rule = HONOURED_KEYS[path];
      if (rule) {
        const why = rule.idleWhen?.(value, run, block);
        if (why !== undefined) idle.push({ path, why });
      } else if (BLOCKS.has(path) && isObject(value)) visit(value, path);
      else idle.push({ path, why: REASONS[path] ?? "Fulgur does not act on it" });
    }
  };
  visit(config, "");
  return idle;
}

/** The one warning naming every key without effect, or null when there is none. */
export function idleKeysWarning(strategyName: string, source: string, idle: readonly IdleKey[]): string | null {
  if (idle.length === 0) return null;
  const lines = idle.map((k) => `  ${k.path}: ${k.why}`);
  const n = idle.length;
  return `${strategyName}: ${n} key${n === 1 ? "" : "s"} of ${source} ha${n === 1 ? "s" : "ve"} no effect in Fulgur (the rest is acted on):\n${lines.join("\n")}`;
}
