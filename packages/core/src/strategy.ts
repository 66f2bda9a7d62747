/**
 * How training is spread over devices and processes. A small required core (as in Lightning) plus
 * optional abilities, each with a type guard. A strategy is given its accelerator, precision,
 * checkpoint IO and cluster environment; it composes them rather than inheriting from them.
 */
import type { Tensor } from "@fulgur/tensor";
import type { Module, Optimizer } from "@fulgur/nn";
import type { Accelerator } from "./accelerator";
import type { Checkpoint, CheckpointIO } from "./checkpointIO";
import type { ClusterEnvironment } from "./clusterEnvironment";
import type { ContractVersioned } from "./plugin";
import type { Precision } from "./precision";
import type { ReduceOp } from "./processGroup";

export interface StrategyContext {
  readonly accelerator: Accelerator;
  readonly precision: Precision;
  readonly checkpointIO: CheckpointIO;
  readonly cluster: ClusterEnvironment;
  /** Devices requested per node. */
  readonly devices: number;
  readonly numNodes: number;
}

export interface OptimizerStepOptions {
  /** Clip gradients to this global norm (algorithm "norm") or this absolute value ("value"). */
  readonly gradientClipVal?: number;
  readonly gradientClipAlgorithm?: "norm" | "value";
}

export interface OptimizerStepResult {
  /** False when the step was skipped (fp16 overflow). */
  readonly stepped: boolean;
  /** Global gradient norm before clipping, when clipping was asked for. */
  readonly gradNorm?: number;
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
  /** Moves, wraps or shards the module; returns the module the training loop calls. */
  setupModule(module: Module): Promise<Module>;
  /** Wraps the optimizer (ZeRO shards its state); returns the optimizer the loop steps. */
  setupOptimizer(optimizer: Optimizer): Promise<Optimizer>;
  /** Backward through the precision plugin, plus whatever gradient synchronisation the strategy does. */
  backward(loss: Tensor): void;
  /** Finishes gradient synchronisation, unscales, clips, steps the optimizer and zeroes gradients. */
  optimizerStep(optimizer: Optimizer, options: OptimizerStepOptions): Promise<OptimizerStepResult>;

  reduce(value: number, op?: ReduceOp): Promise<number>;
  barrier(name?: string): Promise<void>;
  /** Sends a JSON-serialisable value from `src` to every rank. */
  broadcast<T>(value: T, src?: number): Promise<T>;

  /** The full state of the module on every rank that must save it (rank 0 for unsharded strategies). */
  moduleStateDict(module: Module): Promise<Record<string, Tensor>>;
  loadModuleStateDict(module: Module, state: Record<string, Tensor>): Promise<void>;
  saveCheckpoint(checkpoint: Checkpoint, path: string): Promise<void>;
  loadCheckpoint(path: string): Promise<Checkpoint>;
  teardown(): Promise<void>;
}

/**
 * Optional ability: told when training failed on this rank, before `teardown`, so the strategy can
 * make the failure travel to every other rank (DESIGN.md, decision 12) instead of leaving them waiting.
 */
export interface ExceptionAware {
  onException(error: unknown): void | Promise<void>;
}

export function isExceptionAware(s: object): s is ExceptionAware {
  return typeof (s as Partial<ExceptionAware>).onException === "function";
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

export function hasBackwardSyncControl(s: object): s is BackwardSyncControl {
  return typeof (s as Partial<BackwardSyncControl>).noBackwardSync === "function";
}

export function isLaunching(s: object): s is Launching {
  return typeof (s as Partial<Launching>).launch === "function";
}
