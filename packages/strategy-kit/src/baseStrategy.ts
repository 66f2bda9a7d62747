/**
 * BaseStrategy: the whole Strategy contract with single-device behaviour, so an author overrides
 * a handful of members (Lightning's `Strategy` plays the same part). Everything a strategy needs
 * from its surroundings arrives in `setup`: the accelerator, the precision (which owns the
 * optimizer step), the cluster environment and, when the user chose one, the checkpoint IO;
 * otherwise `defaultCheckpointIO()` decides (a sharded strategy returns its sharded format).
 */
import {
  CONTRACT_VERSION,
  type Checkpoint,
  type CheckpointIO,
  type MemoryEstimate,
  type MemoryEstimateInput,
  type MemoryEstimating,
  type OptimizerStepOptions,
  type OptimizerStepResult,
  type Precision,
  type PrecisionStepOptions,
  type ReduceOp,
  type Strategy,
  type StrategyContext,
} from "@fulgur/core";
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { FullCheckpointIO, SHARDED_INDEX_FILE, ShardedCheckpointIO } from "@fulgur/checkpoint-io";
import type { Module, Optimizer } from "@fulgur/nn";
import { type Tensor, normalizeDevice, noGrad } from "@fulgur/tensor";
import { estimateReplicatedMemory } from "./memoryEstimate";

/** Reading a checkpoint needs no other rank: the coordination a sharded IO asks for is never used by `load`. */
const LOCAL_READER = Object.freeze({ rank: 0, worldSize: 1, barrier: async () => {}, broadcast: async <T>(v: T) => v });

function isShardedCheckpoint(path: string): boolean {
  return existsSync(path) && statSync(path).isDirectory() && existsSync(join(path, SHARDED_INDEX_FILE));
}

export interface BaseStrategyOptions {
  /** The device to train on; default: the accelerator's device for this process's local rank. */
  readonly device?: string;
}

export abstract class BaseStrategy implements Strategy, MemoryEstimating {
  readonly contractVersion = CONTRACT_VERSION;
  abstract readonly name: string;
  private contextValue: StrategyContext | null = null;
  private ownCheckpointIO: CheckpointIO | null = null;
  protected device: string | null;

  constructor(options: BaseStrategyOptions = {}) {
    this.device = options.device ? normalizeDevice(options.device) : null;
  }

  get rootDevice(): string {
    return this.device ?? "cpu";
  }
  get globalRank(): number {
    return 0;
  }
  get localRank(): number {
    return 0;
  }
  get worldSize(): number {
    return 1;
  }
  get isGlobalZero(): boolean {
    return this.globalRank === 0;
  }

  /** What setup was given; throws naming the strategy before setup. */
  protected get context(): StrategyContext {
    if (!this.contextValue) throw new Error(`${this.name}: setup() must run before training`);
    return this.contextValue;
  }

  get precision(): Precision {
    return this.context.precision;
  }

  /** The user's (or the registry entry's) checkpoint IO, else this strategy's default. */
  get checkpointIO(): CheckpointIO {
    return this.context.checkpointIO ?? (this.ownCheckpointIO ??= this.defaultCheckpointIO());
  }

  /** The format this strategy writes when nobody chose one: one safetensors file. */
  protected defaultCheckpointIO(): CheckpointIO {
    return new FullCheckpointIO();
  }

  async setup(context: StrategyContext): Promise<void> {
    this.contextValue = context;
    // More ranks than devices only happens when ranks share devices (the host-staged group): wrap around.
    const count = Math.max(1, Math.min(context.accelerator.deviceCount(), Number.MAX_SAFE_INTEGER));
    this.device ??= context.accelerator.deviceFor(this.localRank % count);
    await context.accelerator.setupDevice(this.device);
  }

  async setupModule(module: Module): Promise<Module> {
    module.to(this.rootDevice);
    return module;
  }

  async setupOptimizer(optimizer: Optimizer): Promise<Optimizer> {
    return optimizer;
  }

  backward(loss: Tensor): void {
    this.precision.backward(loss);
  }

  async optimizerStep(optimizer: Optimizer, options: OptimizerStepOptions): Promise<OptimizerStepResult> {
    return this.precision.optimizerStep(optimizer, { ...options, ...(await this.prepareStep(optimizer)) });
  }

  /**
   * Runs before the precision's step: finish gradient synchronisation here, and return what the
   * step needs to know of where gradients live (`collectives`, `gradients` for sharded strategies).
   */
  protected async prepareStep(_optimizer: Optimizer): Promise<Partial<PrecisionStepOptions>> {
    return {};
  }

  async reduce(value: number, _op?: ReduceOp): Promise<number> {
    if (typeof value !== "number") throw new TypeError(`reduce: value must be a number, got ${typeof value}`);
    return value;
  }

  async barrier(_name?: string): Promise<void> {}

  async broadcast<T>(value: T, _src = 0): Promise<T> {
    return value;
  }

  /** Every rank's `tensor`, stacked along a new first dimension of size `worldSize`. */
  async allGather(tensor: Tensor): Promise<Tensor> {
    return noGrad(() => tensor.reshape([1, ...tensor.shape]).contiguous().clone());
  }

  /** Overwrites `tensors` in place with their values on rank `src`. */
  async broadcastTensors(_tensors: readonly Tensor[], _src = 0): Promise<void> {}

  async moduleStateDict(module: Module): Promise<Record<string, Tensor>> {
    return module.stateDict();
  }

  async loadModuleStateDict(module: Module, state: Record<string, Tensor>): Promise<void> {
    module.loadStateDict(state);
  }

  /** Rank 0 writes the (replicated) state; nobody reads it, or removes an older one, before it is complete. */
  async saveCheckpoint(checkpoint: Checkpoint, path: string): Promise<void> {
    if (this.isGlobalZero) await this.checkpointIO.save(checkpoint, path);
    await this.barrier("saveCheckpoint");
  }

  /**
   * Reads with the chosen checkpoint IO, except that a sharded checkpoint (a directory with an
   * index) is recognised whatever IO writes here: any strategy loads any format (decision 9).
   */
  async loadCheckpoint(path: string): Promise<Checkpoint> {
    if (this.checkpointIO.name !== "sharded" && isShardedCheckpoint(path)) {
      return new ShardedCheckpointIO(LOCAL_READER).load(path, { device: this.rootDevice });
    }
    return this.checkpointIO.load(path, { device: this.rootDevice });
  }

  /** Every rank holds the whole model, its gradients and its optimizer state. */
  estimateMemory(input: MemoryEstimateInput): MemoryEstimate {
    return estimateReplicatedMemory(this.name, input, { communicationBytes: 0 });
  }

  async teardown(): Promise<void> {}
}
