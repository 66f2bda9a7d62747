/**
 * How training is spread over devices and processes. A small required core (as in Lightning) plus
 * optional abilities, each with a type guard; the Trainer falls back to single-device behaviour for
 * an ability a strategy lacks (DESIGN.md, decision 13). A strategy is given its accelerator,
 * precision, cluster environment and, when the user chose one, its checkpoint IO; it composes them
 * rather than inheriting from them. `@fulgur/strategy-kit` has a base class with every default.
 */
import type { Tensor } from "@fulgur/tensor";
import type { ActivationProfile, Module, Optimizer } from "@fulgur/nn";
import type { Accelerator } from "./accelerator";
import type { Checkpoint, CheckpointIO, CheckpointMeta } from "./checkpointIO";
import type { ClusterEnvironment } from "./clusterEnvironment";
import type { ContractVersioned } from "./plugin";
import type { OptimizerStepOptions, OptimizerStepResult, Precision } from "./precision";
import type { ReduceOp } from "./processGroup";

export type { OptimizerStepOptions, OptimizerStepResult } from "./precision";

export interface StrategyContext {
  readonly accelerator: Accelerator;
  readonly precision: Precision;
  /** The checkpoint IO the user (or the registry entry) chose; absent: the strategy's own default. */
  readonly checkpointIO?: CheckpointIO;
  readonly cluster: ClusterEnvironment;
  /** Devices requested per node. */
  readonly devices: number;
  readonly numNodes: number;
}

export interface Strategy extends ContractVersioned {
  readonly name: string;
  readonly rootDevice: string;
  readonly globalRank: number;
  readonly localRank: number;
  readonly worldSize: number;
  readonly isGlobalZero: boolean;

  /** Called once per process before anything else: picks the device, joins the process group. */
  setup(context: StrategyContext): Promise<void>;
  /** Moves, wraps or shards the module in place, and returns it (the Trainer refuses another object). */
  setupModule(module: Module): Promise<Module>;
  /** Wraps the optimizer (ZeRO shards its state); returns the optimizer the loop steps. */
  setupOptimizer(optimizer: Optimizer): Promise<Optimizer>;
  /** Backward through the precision plugin, plus whatever gradient synchronisation the strategy does. */
  backward(loss: Tensor): void;
  /** Finishes gradient synchronisation, then the precision's step (unscale, clip, step, zero). */
  optimizerStep(optimizer: Optimizer, options: OptimizerStepOptions): Promise<OptimizerStepResult>;

  reduce(value: number, op?: ReduceOp): Promise<number>;
  barrier(name?: string): Promise<void>;
  /** Sends a JSON-serialisable value from `src` to every rank. */
  broadcast<T>(value: T, src?: number): Promise<T>;

  /** The module's state this rank saves (the full state on rank 0 for unsharded strategies). */
  moduleStateDict(module: Module): Promise<Record<string, Tensor>>;
  loadModuleStateDict(module: Module, state: Record<string, Tensor>): Promise<void>;
  saveCheckpoint(checkpoint: Checkpoint, path: string): Promise<void>;
  loadCheckpoint(path: string): Promise<Checkpoint>;
  teardown(): Promise<void>;
}

/**
 * Optional ability: told when training failed on this rank, before `teardown`, so the strategy can
 * make the failure travel to every other rank (DESIGN.md decision 12) instead of leaving them waiting.
 */
export interface ExceptionAware {
  onException(error: unknown): void | Promise<void>;
}

/** Optional ability: skip gradient synchronisation on accumulation steps (DDP's no_sync). */
export interface BackwardSyncControl {
  noBackwardSync<T>(module: Module, fn: () => T): T;
}

/** Optional ability: the strategy starts its own processes when none were started for it. */
export interface Launching {
  /**
   * Called in the process the user started. Returns "continue" to train in this process (it is a
   * rank) or "done" when the workers ran the training and this process only waited for them.
   */
  launch(context: { devices: number; numNodes: number; script: string; argv: readonly string[] }): Promise<
    "continue" | "done"
  >;
}

/**
 * Optional ability: the strategy builds the module. `configure` is the user's `configureModel`;
 * the strategy runs it where it wants the parameters made (FSDP: on the `meta` device, then
 * materialised, initialised and sharded one unit at a time, so no rank ever holds the whole
 * model). Fallback: the Trainer runs `configure` with `rootDevice` as the default device.
 */
export interface ModuleBuilding {
  buildModule(module: Module, configure: () => void): Promise<void>;
}

/**
 * Optional ability: the data-parallel layout the loader shards by. Pipeline stages share one batch,
 * so their data-parallel size is smaller than the world size. Fallback: global rank and world size.
 */
export interface DataParallelLayout {
  readonly dataParallelRank: number;
  readonly dataParallelSize: number;
}

/** What the Trainer hands a strategy that runs a whole batch. */
export interface BatchContext {
  readonly module: Module;
  /** The batch as the loader produced it, already on the strategy's root device. */
  readonly batch: unknown;
  readonly batchIdx: number;
  /** The loss is divided by this before backward (gradient accumulation over this many batches). */
  readonly lossDivisor: number;
  /** Whether gradients are synchronised after this batch (false inside an accumulation window). */
  readonly syncGradients: boolean;
  /** The user's training step on a (micro-)batch under the precision's forward context: its loss. */
  readonly trainingStep: (batch: unknown) => Tensor;
}

/**
 * Optional ability: the strategy runs forward and backward of a whole batch (pipeline schedules);
 * the Trainer still logs, steps the optimizer and calls the hooks. Returns the batch's loss as a
 * single-element tensor with the same value on every rank (the stage holding the loss reports it).
 */
export interface BatchRunning {
  runBatch(context: BatchContext): Tensor;
}

/** Optimizer state as checkpoint data: tensors by flat name, scalars and layout as JSON. */
export interface OptimizerState {
  readonly tensors: Record<string, Tensor>;
  readonly meta: CheckpointMeta;
}

/**
 * Optional ability: the strategy produces and loads optimizer state (sharded strategies name each
 * parameter's state by its fully qualified name and flattened range, decision 15). Fallback: the
 * optimizer's own `stateDict()`, flattened.
 */
export interface OptimizerStateHandling {
  optimizerStateDict(optimizer: Optimizer): Promise<OptimizerState>;
  loadOptimizerStateDict(optimizer: Optimizer, state: OptimizerState): Promise<void>;
}

/** Bytes, split the way a memory plan reports them. */
export interface MemoryBreakdown {
  readonly parameters: number;
  readonly gradients: number;
  readonly optimizerState: number;
  /** Units gathered for compute, prefetched units included (sharded strategies). */
  readonly gatheredUnits: number;
  /** Communication buckets and staging buffers. */
  readonly communication: number;
  readonly activations: number;
  readonly workspace: number;
  readonly total: number;
}

export interface MemoryEstimateInput {
  /** The model, built on the `meta` device (nothing allocated). */
  readonly module: Module;
  readonly precision: string;
  readonly microBatch: number;
  /** Activation bytes of one sample through the whole model, when known (measured or from a formula). */
  readonly activationBytesPerSample?: number;
  /**
   * What the forward pass saves and holds, segment by segment (@fulgur/nn's `activationProfile`);
   * when absent, the strategy asks @fulgur/nn for the model's formula, then falls back to
   * `activationBytesPerSample`.
   */
  readonly activations?: ActivationProfile;
  /** Micro-batches per optimizer step (default 1): from the second on, gradients exist through forward and backward. */
  readonly accumulateGradBatches?: number;
  /** Tokens per sample (default: the model's context length). */
  readonly seqLen?: number;
  /** Optimizer state bytes per trained parameter (AdamW in fp32: 8). */
  readonly optimizerBytesPerParameter?: number;
  /** Ranks the estimate is for (default: the strategy's world size, or 1 before setup). */
  readonly worldSize?: number;
  /**
   * The device is a GPU beside the host, not the host itself: offloaded state crosses a bus, and
   * the copies under way hold device memory (gradients coming down, a slice going up). Default
   * false (the CPU backend, where the "device" is host memory and nothing is copied).
   */
  readonly copiesCrossBus?: boolean;
}

export interface MemoryEstimate {
  readonly strategy: string;
  readonly perDevice: MemoryBreakdown;
  readonly perHost: MemoryBreakdown;
  /** Bytes on disk (NVMe offload). */
  readonly disk: number;
  /**
   * The directory the disk bytes go to (NVMe offload's path), when known: a plan for which no
   * disk is described reads that filesystem's free space instead.
   */
  readonly diskPath?: string;
  /** How the figures were made, for the plan's table. */
  readonly notes: readonly string[];
  /**
   * When the device peaks, for advice on what to change: the phase ("forward", "backward",
   * "optimizer", "gather") and where in it ("backward of block 3"). Absent when not simulated.
   */
  readonly peak?: { readonly phase: MemoryPhase; readonly where: string };
}

export type MemoryPhase = "forward" | "backward" | "optimizer" | "gather";

/** What the Trainer hands a strategy that writes its own checkpoint (see StreamedSaving). */
export interface StreamedSaveInput {
  readonly module: Module;
  readonly optimizer: Optimizer | null;
  /**
   * The checkpoint from the module's and the optimizer's state, as the Trainer builds it. The
   * strategy may pass placeholder tensors (on the `meta` device) and produce their values while
   * the file is written.
   */
  build(moduleState: Record<string, Tensor>, optimizerState: OptimizerState | null): Checkpoint;
}

/**
 * Optional ability: writes a training checkpoint while producing its tensors, so a full save of a
 * sharded model gathers one unit at a time instead of holding the model on one rank. Returns false
 * when it does not stream this save (the Trainer then saves as usual). Every rank calls it.
 */
export interface StreamedSaving {
  saveStreamed(input: StreamedSaveInput, path: string): Promise<boolean>;
}

/** Optional ability: what a model and its options will hold per device, per host and on disk. */
export interface MemoryEstimating {
  estimateMemory(input: MemoryEstimateInput): MemoryEstimate;
}

const hasFunction = (s: object, key: string): boolean => typeof (s as Record<string, unknown>)[key] === "function";

export const isExceptionAware = (s: object): s is ExceptionAware => hasFunction(s, "onException");
export const hasBackwardSyncControl = (s: object): s is BackwardSyncControl => hasFunction(s, "noBackwardSync");
export const isLaunching = (s: object): s is Launching => hasFunction(s, "launch");
export const buildsModule = (s: object): s is ModuleBuilding => hasFunction(s, "buildModule");
export const runsBatch = (s: object): s is BatchRunning => hasFunction(s, "runBatch");
export const handlesOptimizerState = (s: object): s is OptimizerStateHandling =>
  hasFunction(s, "optimizerStateDict") && hasFunction(s, "loadOptimizerStateDict");
export const estimatesMemory = (s: object): s is MemoryEstimating => hasFunction(s, "estimateMemory");
export const savesStreamed = (s: object): s is StreamedSaving => hasFunction(s, "saveStreamed");

export function hasDataParallelLayout(s: object): s is DataParallelLayout {
  const l = s as Partial<DataParallelLayout>;
  return Number.isInteger(l.dataParallelRank) && Number.isInteger(l.dataParallelSize) && (l.dataParallelSize ?? 0) >= 1;
}
