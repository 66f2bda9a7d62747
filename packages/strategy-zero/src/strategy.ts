/**
 * DeepSpeedStrategy: DeepSpeed's ZeRO (Lightning's DeepSpeedStrategy) as a thin facade over the
 * kit's ParallelStrategy and the sharding engine. The strategy reads a DeepSpeed config into a plan
 * at construction (config.ts), maps the stage onto the engine (stages.ts), takes from the Trainer
 * what the config leaves "auto" (trainerValues.ts), and names at start every key it does not act
 * on (keys.ts). The engine moves the data. Checkpoints name each parameter by its fully qualified
 * name (shardedState.ts), so ZeRO at any stage and world size, FSDP, DDP and single_device read
 * each other's.
 */
import type {
  MemoryEstimate,
  MemoryEstimateInput,
  ModuleBuilding,
  OptimizerState,
  OptimizerStateHandling,
  StrategyContext,
  StreamedSaveInput,
  StreamedSaving,
} from "@fulgur/core";
import type {
  OptimizerStepOptions,
  OptimizerStepResult,
  PrecisionStepOptions,
} from "@fulgur/core";
import type { BatchSizes, ConfigProblem } from "@fulgur/deepspeed-config-schema";
import { type Module, type Optimizer, materializeModule } from "@fulgur/nn";
import {
  type OffloadKeep,
  ShardingEngine,
  type UnitPlan,
  planUnits,
  saveFullStreamed,
  streamsTensors,
} from "@fulgur/sharding";
import {
  ParallelStrategy,
  loadNamedOptimizerState,
  namedOptimizerState,
} from "@fulgur/strategy-kit";
import {
  type Tensor,
  itemsize,
  materialize,
  noGrad,
  scope,
  withDevice,
} from "@fulgur/tensor";
import {
  type DeepSpeedOptions,
  type ResolvedDeepSpeedOptions,
  type ZeroStage,
  parseDeepSpeedOptions,
} from "./api";
import { ZeroConfigError, type ZeroPlan, resolvePlan } from "./config";
import { idleKeysWarning, keysWithoutEffect } from "./keys";
import { installLossScaler } from "./lossScaler";
import { estimateZeroMemory } from "./memory";
import { checkOffloadKeep, checkOffloadKeepHost, checkOffloadStepShare, describePlacement, offloadStepInBackwardProblem, deviceStepShareFor, freeDeviceBytes, freeHostBytes, keepForRatio, keepInHost, keepWithinDevice } from "./placement";
import {
  SegmentIndex,
  gatherModuleState,
  loadModuleState,
  wholeSegmentStates,
} from "./shardedState";
import {
  DEFAULT_PREFETCH,
  checkNvmePath,
  describeLayout,
  engineOptionsFor,
  nvmeOffloadOf,
  offloaded,
  prefetchDepth,
  unitsKeptToBackward,
  persistentUnits,
  withPersistentUnits,
  unitGroupsFor,
} from "./stages";
import {
  clippingFor,
  clippingProblem,
  loaderBatchSizeOf,
  precisionProblems,
  resolveTrainerBatch,
  trainerSettingsOf,
} from "./trainerValues";
import { unitPaths } from "./wrapPolicy";

/** When a config that cannot run is refused. */
export interface DeepSpeedConstruction {
  /**
   * "construction" (the default): by the constructor. "start": by launch or setup, still before
   * any rank trains. The registry uses "start": it builds one instance of every name when the
   * package loads, and a config from FULGUR_DEEPSPEED_CONFIG_PATH (which every name reads) must
   * not stop the package from loading.
   */
  readonly refuseConfigAt?: "construction" | "start";
}

export class DeepSpeedStrategy
  extends ParallelStrategy
  implements ModuleBuilding, OptimizerStateHandling, StreamedSaving
{
  readonly name: string;
  readonly options: ResolvedDeepSpeedOptions;
  private readonly resolved: ZeroPlan | null = null;
  /** Why the config cannot run, kept for launch and setup ("start"). */
  private readonly refusal: Error | null = null;
  private engine: ShardingEngine | null = null;
  private index: SegmentIndex | null = null;
  private prefetch = DEFAULT_PREFETCH;
  /** The batch sizes this run trains with ("auto" filled from the Trainer), once setupModule knows them. */
  private batch: BatchSizes | null = null;
  /** With offload: the units that keep state on the device (offload_optimizer.ratio, offloadKeep), or null. */
  private keep: OffloadKeep | null = null;
  /** Puts the precision's own loss scaler back at teardown (16-mixed only). */
  private restoreScaler: (() => void) | null = null;

  constructor(
    options: DeepSpeedOptions = {},
    name = "deepspeed",
    construction: DeepSpeedConstruction = {}
  ) {
    const parsed = parseDeepSpeedOptions(options, name);
    super(parsed);
    this.options = parsed;
    this.name = name;
    try {
      this.resolved = resolvePlan(parsed, name);
      checkOffloadKeep(this.resolved, parsed.offloadKeep, name);
      checkOffloadKeepHost(this.resolved, parsed.offloadKeepHost, name);
      checkOffloadStepShare(this.resolved, parsed.offloadStepShare, name);
      this.checkStepInBackward(null, undefined);
    } catch (err) {
      if (construction.refuseConfigAt !== "start") throw err;
      this.refusal = err as Error;
    }
  }

  /** What the config and the options resolved to (frozen); throws the config's problems if it cannot run. */
  get plan(): ZeroPlan {
    if (this.refusal) throw this.refusal;
    return this.resolved!;
  }

  /** The DeepSpeed config this strategy runs with (Lightning's `strategy.config`): the options merged in, the stage resolved. */
  get config(): Readonly<Record<string, unknown>> {
    return this.plan.config;
  }

  get stage(): ZeroStage {
    return this.plan.stage;
  }

  /**
   * train_batch_size, train_micro_batch_size_per_gpu and gradient_accumulation_steps as this run
   * trains them ("auto" filled from the Trainer's loader and accumulation), after setupModule;
   * null outside a Trainer's fit.
   */
  get batchSizes(): BatchSizes | null {
    return this.batch;
  }

  /** The sharding engine (after setupModule), for tests and tools. */
  get sharding(): ShardingEngine {
    if (!this.engine)
      throw new Error(`${this.name}: setupModule() must run first`);
    return this.engine;
  }

  private fail(problems: readonly ConfigProblem[]): void {
    if (problems.length > 0)
      throw new ZeroConfigError(this.name, this.plan.source, problems);
  }

  // ---- starting --------------------------------------------------------------------------------

  override async launch(context: {
    devices: number;
    numNodes: number;
    script: string;
    argv: readonly string[];
  }): Promise<"continue" | "done"> {
    checkNvmePath(this.plan, this.name);
    return super.launch(context);
  }

  /** Refuses what cannot run before joining the job (every rank refuses alike), then joins it and warns once. */
  override async setup(context: StrategyContext): Promise<void> {
    checkNvmePath(this.plan, this.name);
    const precision = context.precision;
    this.fail(precisionProblems(this.plan, precision.name));
    this.checkStepInBackward(precision.name, undefined);
    this.restoreScaler = installLossScaler(precision, this.plan.lossScaler);
    await super.setup(context);
    const idle = keysWithoutEffect(this.plan.config, {
      stage: this.plan.stage,
      precision: precision.name,
      scalerReachable: this.restoreScaler !== null,
      nvme: nvmeOffloadOf(this.plan) !== null,
    });
    const warning = idleKeysWarning(this.name, this.plan.source, idle);
    if (warning !== null && this.globalRank === 0)
      process.stderr.write(`${warning}\n`);
  }

  // ---- building and sharding -------------------------------------------------------------------

  /** Builds the module on the `meta` device: setupModule materialises and shards it one unit at a time. */
  async buildModule(_module: Module, configure: () => void): Promise<void> {
    withDevice("meta", configure);
  }

  override async setupModule(module: Module): Promise<Module> {
    const trainer = trainerSettingsOf(module);
    if (trainer) {
      const clip = clippingProblem(
        this.plan,
        trainer.gradientClipVal,
        trainer.gradientClipAlgorithm
      );
      const batch = resolveTrainerBatch(
        this.plan,
        this.worldSize,
        trainer.accumulateGradBatches,
        loaderBatchSizeOf(module)
      );
      this.fail([...batch.problems, ...(clip ? [clip] : [])]);
      this.checkStepInBackward(this.precision.name, trainer.gradientClipVal);
      this.batch = batch.sizes;
    }
    const device = this.rootDevice;
    const deferred = module.parameters().some((p) => p.device === "meta");
    if (!deferred) module.to(device);
    const paths = unitPaths(module, this.options.autoWrapPolicy);
    const plans = planUnits(module, paths);
    const wrapped = plans.filter((u) => u.path !== "").map((u) => ({ path: u.path, numel: unitNumel(u) }));
    const wrappedSizes = wrapped.map((u) => u.numel);
    this.prefetch = prefetchDepth(this.plan, wrappedSizes);
    const keptToBackward = new Set(unitsKeptToBackward(this.plan, wrapped, this.prefetch));
    const persistent = persistentUnits(this.plan, wrapped);
    this.keep = await this.keepFor(module, plans, trainer?.accumulateGradBatches ?? 1);
    const engine = new ShardingEngine(
      module,
      unitGroupsFor(this.plan.stage, this.processGroup),
      engineOptionsFor(this.plan, this.prefetch, withPersistentUnits(this.keep, persistent), this.deviceStepShare, this.options.mixedPrecision, this.options.offloadStepInBackward === true),
      device
    );
    for (const plan of plans) {
      const tensors = plan.params.map((p) => p.tensor);
      // Deferred init: this unit gets memory and its initial values, goes into this rank's slice and
      // is freed before the next unit is made. A module built eagerly takes rank 0's values instead.
      if (deferred)
        noGrad(() => scope(() => void materialize(tensors, device)));
      else if (this.worldSize > 1) await this.broadcastTensors(tensors, 0);
      // [Note: units kept from forward to backward] in stages.ts.
      engine.addUnit(keptToBackward.has(plan.path) ? { ...plan, options: { reshardAfterForward: false } } : plan);
    }
    if (deferred) materializeModule(module, device);
    engine.ready();
    this.engine = engine;
    this.index = new SegmentIndex(engine);
    this.log(
      `${this.name}: ${describeLayout(
        this.plan,
        engine.units.length,
        wrappedSizes.length,
        this.worldSize,
        this.prefetch,
        keptToBackward.size,
        persistent.length
      )}`
    );
    if (offloaded(this.plan))
      this.log(`${this.name}: ${describePlacement(engine.placement())}${engine.describeOffloadedStep()}`);
    return module;
  }

  /**
   * Which units keep state on the device: by offload_optimizer.ratio, or with offloadKeep by the
   * device memory left after what training needs there anyway (placementBudget.ts). Every rank
   * must place alike (kept units are gathered at other times), so "auto" takes the least free
   * memory over the ranks.
   */
  private async keepFor(module: Module, plans: readonly UnitPlan[], accumulate: number): Promise<OffloadKeep | null> {
    if (!offloaded(this.plan)) return null;
    const { offloadKeep, offloadKeepHost } = this.options;
    const deviceBytes = offloadKeep === "auto" ? await this.reduce(freeDeviceBytes(this.name, this.context.accelerator, this.rootDevice), "min") : offloadKeep;
    const hostBytes = offloadKeepHost === "auto" ? await this.reduce(freeHostBytes(), "min") : offloadKeepHost;
    return this.placeUnits(this.estimateInput(module, accumulate), plans, deviceBytes, hostBytes);
  }

  /**
   * Before setup (a memory plan): the placement the options make without reading the machine, so
   * the plan counts what stays on the device or in host memory. A budget of "auto" is read only
   * at setup: until then its units count as offloaded (the larger host and disk figures).
   */
  private plannedKeep(input: MemoryEstimateInput): OffloadKeep | null {
    if (!offloaded(this.plan)) return null;
    const bytes = (b: "auto" | number | null): number | null => (typeof b === "number" ? b : null);
    const plans = planUnits(input.module, unitPaths(input.module, this.options.autoWrapPolicy));
    return this.placeUnits(input, plans, bytes(this.options.offloadKeep), bytes(this.options.offloadKeepHost));
  }

  /**
   * Which units keep their state where ([Note: three tiers] in @fulgur/sharding): on the device by
   * offload_optimizer.ratio, or within `deviceBytes` beyond what training needs there anyway;
   * then, of the others, in host memory within `hostBytes` beyond what the host holds anyway with
   * all of them on disk. Null budgets choose nothing.
   */
  private placeUnits(input: MemoryEstimateInput, plans: readonly UnitPlan[], deviceBytes: number | null, hostBytes: number | null): OffloadKeep | null {
    const units = plans.map((u) => ({ path: u.path, numel: unitNumel(u) }));
    const masterDtype = plans[0]?.params[0]?.tensor.dtype ?? "float32";
    const worldSize = input.worldSize ?? this.worldSize;
    const shards = this.plan.stage === 0 ? 1 : worldSize;
    const estimate = (keep: OffloadKeep | null, at: MemoryEstimateInput = input) =>
      estimateZeroMemory(this.name, this.plan, at, { worldSize, prefetch: this.prefetch, policy: this.options.autoWrapPolicy, keep, deviceStepShare: this.deviceStepShare, paramDtype: this.options.mixedPrecision?.paramDtype ?? null });
    let onDevice: OffloadKeep | null = null;
    if (deviceBytes !== null) {
      onDevice = keepWithinDevice(units, deviceBytes - estimate(null).perDevice.total, { stage: this.plan.stage, shards, masterDtype, precision: input.precision });
    } else if (this.plan.offloadRatio < 1) onDevice = keepForRatio(units, this.plan.offloadRatio);
    if (hostBytes === null) return onDevice;
    const base: OffloadKeep = onDevice ?? { optimizerState: [], parameters: [] };
    // The host's own highest (the optimizer step's pieces read in), as on a GPU's host: on the CPU
    // backend the estimate's host figure is the host's share of the moment device and host
    // together peak, which may leave the pieces out.
    const hostNeeds = estimate(base, { ...input, copiesCrossBus: true }).perHost.total;
    const host = keepInHost(units, base.optimizerState, hostBytes - hostNeeds, {
      shards,
      bytesPerElement: (this.plan.offloadOptimizer === "nvme" ? 8 : 0) + (this.plan.offloadParam === "nvme" ? itemsize(masterDtype) : 0),
    });
    return Object.freeze({ ...base, host });
  }

  private estimateInput(module: Module, accumulate: number): MemoryEstimateInput {
    return {
      module,
      precision: this.precision.name,
      microBatch: this.batch?.train_micro_batch_size_per_gpu ?? loaderBatchSizeOf(module) ?? 1,
      accumulateGradBatches: accumulate,
      worldSize: this.worldSize,
    };
  }

  override async setupOptimizer(optimizer: Optimizer): Promise<Optimizer> {
    const foreign = this.segments.countForeign(
      optimizer.paramGroups.flatMap((g) => g.params)
    );
    if (foreign > 0) {
      throw new Error(
        `${this.name}: ${foreign} tensor(s) in the optimizer are not the sharded module's parameters; ` +
          "create the optimizer in configureOptimizers from this.parameters() (ZeRO replaces the parameters by their slices when it shards the module)"
      );
    }
    this.sharding.attachOptimizer(optimizer);
    return optimizer;
  }

  /**
   * offloadStepInBackward refused where it cannot act or would change the numbers, as soon as what
   * decides it is known: the config at construction, the precision at setup, the Trainer's clipping
   * at setupModule.
   */
  private checkStepInBackward(precision: string | null, trainerClip: number | undefined): void {
    if (this.options.offloadStepInBackward !== true) return;
    const problem = offloadStepInBackwardProblem(this.plan, precision, trainerClip, this.name);
    if (problem) throw problem;
  }

  private get segments(): SegmentIndex {
    if (!this.index)
      throw new Error(`${this.name}: setupModule() must run first`);
    return this.index;
  }

  // ---- the step --------------------------------------------------------------------------------

  override backward(loss: Tensor): void {
    const engine = this.engine;
    if (engine) engine.runBackward(() => super.backward(loss));
    else super.backward(loss);
  }

  /** Inside an accumulation window: the engine's `withoutStep` (reductions run as on any micro-batch). */
  noBackwardSync<T>(_module: Module, fn: () => T): T {
    return this.engine ? this.engine.withoutStep(fn) : fn();
  }

  /** Gradients reduced into this rank's slices; overflow and the clipping norm decided over every rank. */
  protected override async prepareStep(): Promise<
    Partial<PrecisionStepOptions>
  > {
    const gradients = this.sharding.finishGradients();
    // Stage 0's ranks hold the same averaged gradients, so the norm is one rank's; otherwise each holds a slice.
    const sharded = this.plan.stage !== 0;
    return {
      gradients,
      collectives: this.stepCollectives(sharded ? this.processGroup : null),
    };
  }

  override async optimizerStep(
    optimizer: Optimizer,
    options: OptimizerStepOptions
  ): Promise<OptimizerStepResult> {
    const { step, problem } = clippingFor(this.plan, options);
    if (problem) this.fail([problem]);
    const clips = (step.gradientClipVal ?? 0) > 0;
    const result = await this.sharding.step(optimizer, () =>
      super.optimizerStep(optimizer, step), clips
    );
    this.sharding.afterStep();
    return result;
  }

  // ---- checkpoints -----------------------------------------------------------------------------

  /**
   * A full save streamed unit by unit when the checkpoint IO writes tensors one at a time: rank 0
   * never holds the model (@fulgur/sharding's saveFullStreamed).
   */
  async saveStreamed(input: StreamedSaveInput, path: string): Promise<boolean> {
    const io = this.checkpointIO;
    if (!streamsTensors(io)) return false;
    const index = this.segments;
    // Offloaded to NVMe, the optimizer state is read from its files for the save and released after.
    const optimizer = input.optimizer as unknown as Optimizer | null;
    const save = (): Promise<void> =>
      saveFullStreamed(
        input,
        this.sharding.units,
        (p) => {
          const at = index.locate(p);
          return at && { unit: at.unit, index: at.slot };
        },
        this.isGlobalZero,
        (tensors, meta) => io.saveStreamed(tensors, meta, path),
      );
    if (optimizer) await this.sharding.withOptimizerState(optimizer, false, save);
    else await save();
    await this.barrier("saveCheckpoint");
    return true;
  }

  /** The full module state on rank 0, gathered one unit at a time (stage3_gather_16bit_weights_on_model_save). */
  override async moduleStateDict(
    module: Module
  ): Promise<Record<string, Tensor>> {
    return gatherModuleState(this.sharding, module, this.isGlobalZero);
  }

  /** This rank's slices out of a full state saved by any strategy at any world size. */
  override async loadModuleStateDict(
    module: Module,
    state: Record<string, Tensor>
  ): Promise<void> {
    loadModuleState(this.sharding, module, state, this.name);
  }

  async optimizerStateDict(optimizer: Optimizer): Promise<OptimizerState> {
    const index = this.segments;
    // Offloaded to NVMe, the state is read from its files for the save and released after.
    return this.sharding.withOptimizerState(optimizer, false, () =>
      namedOptimizerState(
        optimizer,
        (p) => index.nameOf(p),
        (entries) => wholeSegmentStates(index, entries)
      )
    );
  }

  async loadOptimizerStateDict(
    optimizer: Optimizer,
    state: OptimizerState
  ): Promise<void> {
    const index = this.segments;
    // Offloaded, the loaded state is shared memory like the state the step makes (the CPU optimizer's threads update it).
    // Offloaded to NVMe, the loaded state goes to its files.
    await this.sharding.withOptimizerState(optimizer, true, () =>
      loadNamedOptimizerState(
        optimizer,
        (p) => index.nameOf(p),
        state,
        (p, whole) => index.partOf(p, whole)
      )
    );
  }

  // ---- memory and teardown -----------------------------------------------------------------------

  override estimateMemory(input: MemoryEstimateInput): MemoryEstimate {
    return estimateZeroMemory(this.name, this.plan, input, {
      worldSize: input.worldSize ?? this.worldSize,
      prefetch: this.prefetch,
      policy: this.options.autoWrapPolicy,
      keep: this.keep ?? this.plannedKeep(input),
      deviceStepShare: this.deviceStepShare,
      paramDtype: this.options.mixedPrecision?.paramDtype ?? null,
    });
  }

  /** The share of the offloaded optimizer step updated on the device (offloadStepShare). */
  private get deviceStepShare(): number {
    return deviceStepShareFor(this.plan, this.options.offloadStepShare);
  }

  protected override releaseModule(): void {
    this.engine?.remove();
    this.engine = null;
    this.index = null;
    this.restoreScaler?.();
    this.restoreScaler = null;
  }
}

function unitNumel(plan: UnitPlan): number {
  return plan.params.reduce((n, p) => n + p.tensor.numel, 0);
}
