/**
 * The Trainer: runs the fit and validate loops of a TrainingModule through a strategy, a precision,
 * an accelerator and a checkpoint format found by name. Every step runs inside a memory scope, so
 * whatever a step did not keep is freed when it ends (DESIGN.md, decision 2); losses are read from
 * the device in batches, every `logEveryNSteps` steps (decision 3).
 */
import { join } from "node:path";
import { availableParallelism } from "node:os";
import {
  type Accelerator,
  type Checkpoint,
  type MemoryPhase,
  type CheckpointIO,
  type ClusterEnvironment,
  type OptimizerState,
  type Precision,
  type Strategy,
  buildsModule,
  handlesOptimizerState,
  hasBackwardSyncControl,
  hasDataParallelLayout,
  isExceptionAware,
  isLaunching,
  runsBatch,
  savesStreamed,
} from "@fulgur/core";
import { FullCheckpointIO } from "@fulgur/checkpoint-io";
import { detectClusterEnvironment } from "@fulgur/distributed";
import { type LRScheduler, type Optimizer } from "@fulgur/nn";
import { type Tensor, defaultGenerator, isTensor, manualSeed, noGrad, scope, scopeAsync, withDevice } from "@fulgur/tensor";
import type { Callback } from "./callbacks/callback";
import { ModelCheckpoint } from "./callbacks/modelCheckpoint";
import { ProgressBar } from "./callbacks/progressBar";
import {
  type LoopPosition,
  buildCheckpoint,
  loopPositionOf,
  moduleStateOf,
  optimizerStateOf,
} from "./checkpointing";
import type { DataLoader } from "./data/dataLoader";
import { CSVLogger } from "./loggers/fileLoggers";
import type { Logger, Metrics } from "./loggers/logger";
import { type TrainerOptions, type TrainerOptionsInput, parseTrainerOptions } from "./options";
import { type ChosenPlugins, resolveAccelerator, resolveStrategy, sortPlugins } from "./plugins";
import { gradientsAreFinite, loadNamedOptimizerState, namedOptimizerState } from "@fulgur/strategy-kit";
import type { MemoryPlan, PlanCandidate } from "./plan/memoryPlan";
import type { MachineDescription } from "./plan/machine";
import { planTrainingModule, preflight } from "./plan/preflight";
import { explainOutOfMemory } from "./plan/outOfMemory";
import type { OptimizerConfig, PendingLog, SchedulerConfig, StepOutput, TrainingModule } from "./trainingModule";

export interface FitOptions {
  /** Resume from this checkpoint (model, optimizer, scheduler, loop position, random state). */
  ckptPath?: string;
}

type Batch = unknown;

/** Moves every tensor in a batch (arrays and plain objects too) to the device. */
function toDevice(batch: Batch, device: string): Batch {
  if (isTensor(batch)) return batch.device === device ? batch : batch.to(device);
  if (Array.isArray(batch)) return batch.map((b) => toDevice(b, device));
  if (batch && typeof batch === "object" && Object.getPrototypeOf(batch) === Object.prototype) {
    return Object.fromEntries(Object.entries(batch).map(([k, v]) => [k, toDevice(v, device)]));
  }
  return batch;
}

/** Tokens in a batch, for tokens/s: the elements of its first int32 tensor, else its first dimension. */
function tokensIn(batch: Batch): number {
  if (isTensor(batch)) return batch.dtype === "int32" ? batch.numel : batch.shape[0] ?? 1;
  if (Array.isArray(batch) && batch.length > 0) return tokensIn(batch[0]);
  if (batch && typeof batch === "object") {
    const first = Object.values(batch)[0];
    return first === undefined ? 1 : tokensIn(first);
  }
  return 1;
}

function lossOf(out: StepOutput, where: string): Tensor {
  const loss = isTensor(out) ? out : (out as { loss?: Tensor })?.loss;
  if (!isTensor(loss)) throw new TypeError(`${where} must return the loss tensor or { loss }, got ${typeof out}`);
  if (loss.numel !== 1) throw new TypeError(`${where}: the loss must be a single-element tensor, got shape [${loss.shape.join(", ")}]`);
  return loss;
}

/** The module's name for each of its parameters (optimizer state is saved by name). */
function parameterNames(module: TrainingModule): (p: Tensor) => string | undefined {
  const names = new Map(module.namedParameters().map(([n, p]) => [p, n] as const));
  return (p) => names.get(p);
}

/** A logged loss was NaN or infinite (Trainer option stopOnNonFiniteLoss). */
export class NonFiniteLossError extends Error {
  override readonly name = "NonFiniteLossError";
  constructor(
    readonly step: number,
    readonly loss: number,
  ) {
    super(
      `the training loss is ${loss} at step ${step}: training stopped (the weights would be corrupted from here on). ` +
        "Lower the learning rate, clip gradients (gradientClipVal), or find the first bad operation with detectAnomaly: true; " +
        "stopOnNonFiniteLoss: false trains on anyway",
    );
  }
}

interface MetricAccumulator {
  sum: number;
  count: number;
}

export class Trainer {
  readonly options: TrainerOptions;
  strategy: Strategy | null = null;
  accelerator: Accelerator | null = null;
  precision: Precision;
  /** What the user chose through `plugins` (or the precision option); the rest comes from the strategy. */
  private readonly chosen: ChosenPlugins;
  private registryCheckpointIO: CheckpointIO | undefined;
  readonly callbacks: Callback[];
  readonly loggers: Logger[];
  globalStep = 0;
  /** The step the current fit started from (non-zero when resumed). */
  startStep = 0;
  currentEpoch = 0;
  shouldStop = false;
  optimizer: Optimizer | null = null;
  /**
   * The DataLoader `fit` trains on (Lightning's `trainer.train_dataloader`), set before the
   * strategy sets the module up: a strategy reads the micro-batch from it (DeepSpeed's "auto").
   */
  trainDataloader: DataLoader<any, any> | null = null;
  scheduler: LRScheduler | null = null;
  private schedulerInterval: "step" | "epoch" = "step";
  /** Step the scheduler every this many intervals (Lightning's `frequency`). */
  private schedulerFrequency = 1;
  /** Latest value of every metric (what ModelCheckpoint and EarlyStopping read). */
  callbackMetrics: Record<string, number> = {};
  progressBarMetrics: Record<string, number> = {};
  lastLoss = NaN;
  /** True in a process that only launched the ranks (strategy `ddp` re-launching the script) and trained nothing itself. */
  isLauncherProcess = false;
  tokensPerSecond = 0;
  private module: TrainingModule | null = null;
  private trainLen = 0;
  private position: LoopPosition = { epoch: 0, globalStep: 0, batchInEpoch: 0 };
  private stepMetrics: Metrics = {};
  private epochAccum = new Map<string, MetricAccumulator>();
  private pendingLosses: { step: number; loss: Tensor }[] = [];
  private tokenWindow: { time: number; tokens: number }[] = [];
  private cluster: ClusterEnvironment | null = null;
  /** What the step is doing, for an out-of-memory error (null between phases). */
  private phase: MemoryPhase | null = null;
  /** Samples per micro-batch of the running fit (its DataLoader's batch size). */
  private microBatch = 1;
  /** The plan `fit` checked before launching (null when it did not plan: the CPU with no machine described). */
  memoryPlan: MemoryPlan | null = null;

  constructor(options: TrainerOptionsInput = {}) {
    this.options = parseTrainerOptions(options);
    this.chosen = sortPlugins(this.options.precision, this.options.plugins);
    this.precision = this.chosen.precision;
    this.callbacks = [...(this.options.callbacks as Callback[])];
    if (this.options.enableProgressBar && !this.callbacks.some((c) => c instanceof ProgressBar)) this.callbacks.push(new ProgressBar());
    if (this.options.enableCheckpointing && !this.callbacks.some((c) => c instanceof ModelCheckpoint)) {
      this.callbacks.push(new ModelCheckpoint({ saveLast: true }));
    }
    const lg = this.options.logger;
    this.loggers =
      lg === true
        ? [new CSVLogger({ saveDir: this.options.defaultRootDir })]
        : lg === false
          ? []
          : ((Array.isArray(lg) ? lg : [lg]) as Logger[]);
  }

  get isGlobalZero(): boolean {
    return this.strategy?.isGlobalZero ?? true;
  }

  get globalRank(): number {
    return this.strategy?.globalRank ?? 0;
  }

  get worldSize(): number {
    return this.strategy?.worldSize ?? 1;
  }

  /**
   * Where checkpoints are written: the user's choice (`plugins`), else the one registered with the
   * strategy's name, else the strategy's own (sharded strategies write their sharded format).
   */
  get checkpointIO(): CheckpointIO {
    const fromStrategy = (this.strategy as { checkpointIO?: CheckpointIO } | null)?.checkpointIO;
    return this.chosen.checkpointIO ?? this.registryCheckpointIO ?? fromStrategy ?? (this.fallbackIO ??= new FullCheckpointIO());
  }
  private fallbackIO: FullCheckpointIO | undefined;

  /** The ranks the data is split over and this rank's place among them (pipeline stages share a batch). */
  private get dataParallel(): { size: number; rank: number } {
    const s = this.strategy;
    if (s && hasDataParallelLayout(s)) return { size: s.dataParallelSize, rank: s.dataParallelRank };
    return { size: s?.worldSize ?? 1, rank: s?.globalRank ?? 0 };
  }

  /** Where logs (and by default checkpoints) go: the first logger's directory, else defaultRootDir. */
  get logDir(): string {
    return this.loggers[0]?.logDir ?? this.options.defaultRootDir;
  }

  get modelCheckpoint(): ModelCheckpoint | undefined {
    return this.callbacks.find((c): c is ModelCheckpoint => c instanceof ModelCheckpoint);
  }

  /** Optimizer steps this fit will take (for the progress bar). */
  estimatedStepping(): number {
    const perEpoch = Math.ceil(this.trainLen / this.options.accumulateGradBatches);
    const byEpochs = this.options.maxEpochs !== undefined && this.options.maxEpochs >= 0 ? perEpoch * this.options.maxEpochs : Infinity;
    const bySteps = this.options.maxSteps >= 0 ? this.options.maxSteps : Infinity;
    const n = Math.min(byEpochs, bySteps);
    return Number.isFinite(n) ? n : perEpoch;
  }

  // ---- setup -------------------------------------------------------------------------------------

  private async connect(training?: { readonly module: TrainingModule; readonly microBatch: number }): Promise<"continue" | "done"> {
    const opts = this.options;
    this.accelerator = await resolveAccelerator(opts.accelerator);
    const available = this.accelerator.deviceCount();
    const devices = opts.devices === "auto" ? (this.accelerator.name === "cpu" ? 1 : Math.max(available, 1)) : opts.devices;
    // Ranks may share devices only through the host-staged process group (DESIGN.md decision 16):
    // NCCL refuses two ranks on one GPU. That is for testing many ranks on few GPUs, not for speed.
    const sharing = process.env.FULGUR_PROCESS_GROUP === "host" || opts.strategyOptions.processGroupBackend === "host";
    if (devices > available && !(sharing && available > 0)) {
      throw new RangeError(
        `devices: got ${devices}; only ${available} ${this.accelerator.name} device(s) are available on this machine` +
          (available > 0 ? ' (several ranks can share a device through strategyOptions { processGroupBackend: "host" }, for tests)' : ""),
      );
    }
    if (this.accelerator.name === "cpu") this.checkCpuDevices(devices);
    this.cluster = this.chosen.cluster ?? detectClusterEnvironment();
    const worldSize = devices * opts.numNodes;
    let strategySpec: string | object = opts.strategy;
    if (training) {
      // Before any process is launched (issue 15): plan, let "auto" pick, refuse what cannot fit.
      const outcome = await preflight({
        module: training.module,
        accelerator: this.accelerator,
        devices,
        numNodes: opts.numNodes,
        precision: this.precision.name,
        microBatch: training.microBatch,
        accumulateGradBatches: opts.accumulateGradBatches,
        machine: opts.machine,
        strategy: opts.strategy,
        strategyOptions: opts.strategyOptions,
        ignoreMemoryPlan: opts.ignoreMemoryPlan,
        say: (line) => {
          if ((process.env.RANK ?? "0") === "0") process.stdout.write(`${line}\n`);
        },
      });
      strategySpec = outcome.strategy;
      this.memoryPlan = outcome.plan;
      this.microBatch = training.microBatch;
    }
    const resolved = await resolveStrategy(strategySpec, opts.strategyOptions, worldSize);
    this.strategy = resolved.strategy;
    this.registryCheckpointIO = resolved.checkpointIO;
    if (this.strategy.name === "single_device" && worldSize > 1) {
      throw new RangeError(
        `strategy "single_device" trains one process on one device, but devices × numNodes = ${worldSize}; ` +
          `use devices: 1, or a multi-process strategy such as "ddp"`,
      );
    }
    if (isLaunching(this.strategy) && !this.cluster.createsProcessesExternally && worldSize > 1) {
      const outcome = await this.strategy.launch({
        devices,
        numNodes: opts.numNodes,
        script: process.argv[1] ?? "",
        argv: process.argv.slice(2),
      });
      if (outcome === "done") return "done";
    }
    await this.strategy.setup({
      accelerator: this.accelerator,
      precision: this.precision,
      checkpointIO: this.chosen.checkpointIO ?? this.registryCheckpointIO,
      cluster: this.cluster,
      devices,
      numNodes: opts.numNodes,
    });
    return "continue";
  }

  /** The CPU accelerator accepts any count of processes, but more than the cores only slows training. */
  private checkCpuDevices(devices: number): void {
    if (this.precision.name === "16-mixed") {
      throw new TypeError(
        'precision: "16-mixed" (fp16 with loss scaling) is for GPUs; on the CPU accelerator use "bf16-mixed" or "32-true"',
      );
    }
    const cores = availableParallelism();
    if (devices * this.options.numNodes > cores && !process.env.WORLD_SIZE) {
      process.stderr.write(
        `fulgur: devices: ${devices} on the CPU accelerator starts ${devices} processes on a machine with ${cores} cores; ` +
          "they will share the cores and run slower than fewer processes would\n",
      );
    }
  }

  private async setupModule(module: TrainingModule): Promise<void> {
    const strategy = this.strategy!;
    module.trainer = this;
    this.module = module;
    if (this.options.seed !== undefined) manualSeed(this.options.seed);
    const configure = (): void => noGrad(() => module.configureModel());
    // A strategy that builds the module decides where (FSDP: on meta, materialised unit by unit);
    // otherwise it is built on its device directly: a billion parameters initialised on the CPU
    // and copied over take minutes.
    if (buildsModule(strategy)) await strategy.buildModule(module, configure);
    else withDevice(strategy.rootDevice, configure);
    this.precision.convertModule(module);
    const setUp = await strategy.setupModule(module);
    // The loop calls the TrainingModule itself (its trainingStep and hooks): a strategy wraps or
    // shards it in place, as every built-in one does, rather than handing back another object.
    if (setUp !== module) {
      throw new TypeError(`${strategy.name}.setupModule returned another object than the module it was given; strategies set the module up in place and return it`);
    }
  }

  private configureOptimizers(module: TrainingModule): void {
    const cfg: OptimizerConfig = module.configureOptimizers();
    if (cfg && typeof (cfg as Optimizer).step === "function") {
      this.optimizer = cfg as Optimizer;
      return;
    }
    const c = cfg as { optimizer?: Optimizer; lrScheduler?: LRScheduler | SchedulerConfig };
    if (!c || !c.optimizer || typeof c.optimizer.step !== "function") {
      throw new TypeError("configureOptimizers must return an Optimizer or { optimizer, lrScheduler? }");
    }
    this.optimizer = c.optimizer;
    if (c.lrScheduler) {
      const s = c.lrScheduler as SchedulerConfig;
      if (typeof (s as { scheduler?: unknown }).scheduler === "object") {
        this.scheduler = s.scheduler;
        this.schedulerInterval = s.interval ?? "step";
        const frequency = s.frequency ?? 1;
        if (!Number.isInteger(frequency) || frequency < 1) {
          throw new TypeError(`configureOptimizers: lrScheduler.frequency: got ${JSON.stringify(s.frequency)}; expected a positive integer`);
        }
        this.schedulerFrequency = frequency;
      } else this.scheduler = c.lrScheduler as LRScheduler;
    }
  }

  // ---- public loops ------------------------------------------------------------------------------

  /**
   * The memory plan for `module` (issue 15): each strategy's estimate on this machine or a described
   * one, whether it fits, and the biggest micro-batch that does. The network is built on `meta`
   * (nothing allocated) and the module left unconfigured; nothing is launched.
   */
  async plan(
    module: TrainingModule,
    options: { microBatch?: number; devices?: number; numNodes?: number; machine?: MachineDescription; candidates?: readonly PlanCandidate[] } = {},
  ): Promise<MemoryPlan> {
    const opts = this.options;
    const accelerator = await resolveAccelerator(opts.accelerator);
    const devices = options.devices ?? (opts.devices === "auto" ? (accelerator.name === "cpu" ? 1 : Math.max(accelerator.deviceCount(), 1)) : opts.devices);
    return planTrainingModule({
      module,
      accelerator,
      devices,
      numNodes: options.numNodes ?? opts.numNodes,
      precision: this.precision.name,
      microBatch: options.microBatch ?? 1,
      accumulateGradBatches: opts.accumulateGradBatches,
      machine: options.machine ?? opts.machine,
      candidates: options.candidates,
    });
  }

  async fit<B>(module: TrainingModule, trainLoader: DataLoader<any, B>, valLoader?: DataLoader<any, B> | null, fitOptions: FitOptions = {}): Promise<void> {
    if (!module || typeof module.trainingStep !== "function") throw new TypeError("fit: module must be a TrainingModule");
    if (!trainLoader || typeof (trainLoader as DataLoader).batches !== "function") throw new TypeError("fit: trainLoader must be a DataLoader");
    if ((await this.connect({ module, microBatch: (trainLoader as Partial<DataLoader>).batchSize ?? 1 })) === "done") {
      this.isLauncherProcess = true;
      return;
    }
    const strategy = this.strategy!;
    let status: "success" | "failed" | "interrupted" = "failed";
    this.trainDataloader = trainLoader;
    try {
      await this.setupModule(module);
      this.configureOptimizers(module);
      this.optimizer = await strategy.setupOptimizer(this.optimizer!);
      const dp = this.dataParallel;
      const loader = dp.size > 1 ? trainLoader.distributed(dp.size, dp.rank) : trainLoader;
      const vLoader = valLoader && dp.size > 1 ? valLoader.distributed(dp.size, dp.rank) : valLoader ?? null;
      this.trainLen = this.limit(loader.length, this.options.limitTrainBatches);
      if (this.trainLen === 0) throw new Error("fit: the training DataLoader yields no batches (dataset smaller than one batch with dropLast?)");
      if (fitOptions.ckptPath) await this.restore(fitOptions.ckptPath);
      this.startStep = this.globalStep;
      if (this.isGlobalZero) for (const l of this.loggers) l.logHyperparams(this.hparams(module));
      await module.onFitStart();
      await this.callHooks("onFitStart");
      if (vLoader && this.options.numSanityValSteps > 0 && this.globalStep === 0) {
        await this.runValidation(module, vLoader, this.options.numSanityValSteps, true);
      }
      await this.fitLoop(module, loader, vLoader);
      status = "success";
      await module.onFitEnd();
      await this.callHooks("onFitEnd");
    } catch (err) {
      status = "failed";
      if (isExceptionAware(strategy)) await strategy.onException(err);
      throw explainOutOfMemory(err, {
        step: this.globalStep + 1,
        epoch: this.currentEpoch,
        phase: this.phase,
        strategy: strategy.name,
        microBatch: this.microBatch,
        plan: this.memoryPlan,
      });
    } finally {
      await this.flushLosses(true).catch(() => undefined);
      if (this.isGlobalZero) for (const l of this.loggers) l.finalize(status);
      for (const c of this.callbacks) if (c instanceof ProgressBar) c.onFitEnd();
      await strategy.teardown();
    }
  }

  /** Runs the validation loop once and returns the epoch-averaged metrics. */
  async validate<B>(module: TrainingModule, valLoader: DataLoader<any, B>): Promise<Record<string, number>> {
    if (!this.strategy) {
      if ((await this.connect()) === "done") return {};
      await this.setupModule(module);
    }
    const dp = this.dataParallel;
    const loader = dp.size > 1 ? valLoader.distributed(dp.size, dp.rank) : valLoader;
    return this.runValidation(module, loader, Infinity, false);
  }

  // ---- the fit loop ------------------------------------------------------------------------------

  private limit(length: number, limit: number | undefined): number {
    if (limit === undefined) return length;
    return limit <= 1 && !Number.isInteger(limit) ? Math.floor(length * limit) : Math.min(length, Math.floor(limit));
  }

  private reachedMaxSteps(): boolean {
    return this.options.maxSteps >= 0 && this.globalStep >= this.options.maxSteps;
  }

  /** A stop asked for by a callback (early stopping) waits until `minSteps` steps are done, as in Lightning. */
  private stopRequested(): boolean {
    return this.shouldStop && this.globalStep >= this.options.minSteps;
  }

  private async fitLoop<B>(module: TrainingModule, loader: DataLoader<any, B>, valLoader: DataLoader<any, B> | null): Promise<void> {
    const opts = this.options;
    const maxEpochs = opts.maxEpochs ?? (opts.maxSteps >= 0 ? -1 : 1000);
    const accumulate = opts.accumulateGradBatches;
    const valEveryBatches = opts.valCheckInterval <= 1 ? Math.max(1, Math.floor(this.trainLen * opts.valCheckInterval)) : Infinity;
    const valEverySteps = opts.valCheckInterval > 1 ? Math.floor(opts.valCheckInterval) : Infinity;
    let epoch = this.position.epoch;
    let skip = this.position.batchInEpoch;
    if (skip >= this.trainLen) {
      epoch++;
      skip = 0;
    }
    for (; (maxEpochs < 0 || epoch < maxEpochs) && !this.stopRequested() && !this.reachedMaxSteps(); epoch++, skip = 0) {
      this.currentEpoch = epoch;
      loader.setEpoch(epoch);
      module.train();
      module.stage = "train";
      module.onTrainEpochStart();
      await this.callHooks("onTrainEpochStart");
      let batchIdx = skip;
      let microInStep = 0;
      let stepTokens = 0;
      for (const rawBatch of loader.batches(skip)) {
        if (batchIdx >= this.trainLen) {
          this.disposeBatch(rawBatch);
          break;
        }
        const isLastMicro = (batchIdx + 1) % accumulate === 0 || batchIdx + 1 === this.trainLen;
        stepTokens += tokensIn(rawBatch);
        module.onTrainBatchStart(rawBatch, batchIdx);
        const lossValue = scope(() => this.trainBatch(module, toDevice(rawBatch, this.strategy!.rootDevice), batchIdx, accumulate, isLastMicro));
        this.disposeBatch(rawBatch);
        await this.collectLogs(module);
        microInStep++;
        batchIdx++;
        this.position = { epoch, globalStep: this.globalStep, batchInEpoch: batchIdx };
        if (!isLastMicro) {
          this.pendingLosses.push({ step: -1, loss: lossValue });
          continue;
        }
        await this.optimizerStep(module);
        this.pendingLosses.push({ step: this.globalStep, loss: lossValue });
        this.position = { epoch, globalStep: this.globalStep, batchInEpoch: batchIdx };
        this.recordTokens(stepTokens);
        stepTokens = 0;
        microInStep = 0;
        // Read on the log interval, and on the first step so the starting loss is seen.
        const readNow =
          this.globalStep % opts.logEveryNSteps === 0 ||
          this.globalStep === this.startStep + 1 ||
          this.reachedMaxSteps() ||
          batchIdx === this.trainLen;
        const stepLoss = readNow ? await this.flushLosses(false) : NaN;
        module.onTrainBatchEnd(stepLoss, rawBatch, batchIdx - 1);
        await this.callHooks("onTrainBatchEnd", stepLoss, batchIdx - 1);
        // Written after the callbacks so what they log (learning rates) lands in this step's row.
        if (readNow) await this.flushStepMetrics();
        if (valLoader && (batchIdx % valEveryBatches === 0 && batchIdx !== this.trainLen || this.globalStep % valEverySteps === 0)) {
          await this.runValidation(module, valLoader, this.limitVal(valLoader), false);
        }
        if (this.stopRequested() || this.reachedMaxSteps()) break;
      }
      void microInStep;
      if (this.scheduler && this.schedulerInterval === "epoch" && (epoch + 1) % this.schedulerFrequency === 0) this.scheduler.step();
      const epochDone = batchIdx >= this.trainLen;
      if (epochDone) {
        await this.flushLosses(true);
        this.logEpochMetrics("train");
        module.onTrainEpochEnd();
        const checkVal = valLoader && valEveryBatches !== Infinity && (epoch + 1) % opts.checkValEveryNEpoch === 0;
        if (checkVal) await this.runValidation(module, valLoader!, this.limitVal(valLoader!), false);
        await this.callHooks("onTrainEpochEnd");
      }
      if (!epochDone) {
        // Stopped mid-epoch (maxSteps, shouldStop): end-of-epoch callbacks still run, as in Lightning,
        // so the final state is checkpointed; the loop position keeps the batch to resume from.
        await this.flushLosses(true);
        await this.callHooks("onTrainEpochEnd");
        break;
      }
    }
  }

  /**
   * Forward and backward of one batch; returns the loss (detached, kept for batched reading). A
   * strategy that runs whole batches (pipeline schedules) does both itself.
   */
  private trainBatch(module: TrainingModule, batch: Batch, batchIdx: number, accumulate: number, isLastMicro: boolean): Tensor {
    const strategy = this.strategy!;
    const trainingStep = (b: unknown): Tensor => lossOf(this.precision.forwardContext(() => module.trainingStep(b, batchIdx)), "trainingStep");
    if (runsBatch(strategy)) {
      // Forward and backward interleave in a schedule: an out-of-memory error names no phase.
      this.phase = null;
      const loss = strategy.runBatch({ module, batch, batchIdx, lossDivisor: accumulate, syncGradients: isLastMicro, trainingStep });
      return lossOf(loss, `${strategy.name}.runBatch`).detach().keep();
    }
    this.phase = "forward";
    const loss = trainingStep(batch);
    if (this.options.detectAnomaly) this.checkFinite(module, loss, "loss", batchIdx);
    const scaled = accumulate > 1 ? loss.div(accumulate) : loss;
    this.phase = "backward";
    if (!isLastMicro && hasBackwardSyncControl(strategy)) strategy.noBackwardSync(module, () => strategy.backward(scaled));
    else strategy.backward(scaled);
    if (this.options.detectAnomaly) this.checkFinite(module, loss, "gradients", batchIdx);
    this.phase = null;
    return loss.detach().keep();
  }

  /** detectAnomaly: the loss, then every gradient, read now; the first non-finite one ends training, named. */
  private checkFinite(module: TrainingModule, loss: Tensor, what: "loss" | "gradients", batchIdx: number): void {
    const where = `step ${this.globalStep + 1} (batch ${batchIdx} of epoch ${this.currentEpoch})`;
    if (what === "loss") {
      const v = loss.item();
      if (!Number.isFinite(v)) throw new Error(`detectAnomaly: the loss is ${v} at ${where}, before backward`);
      return;
    }
    for (const [name, p] of module.namedParameters()) {
      if (!p.grad) continue;
      if (!gradientsAreFinite([p.grad])) throw new Error(`detectAnomaly: the gradient of ${name} has NaN or infinite values after backward at ${where}`);
    }
  }

  private limitVal(loader: DataLoader<any, any>): number {
    return this.limit(loader.length, this.options.limitValBatches);
  }

  private disposeBatch(batch: Batch): void {
    if (isTensor(batch)) batch.dispose();
    else if (Array.isArray(batch)) batch.forEach((b) => this.disposeBatch(b));
    else if (batch && typeof batch === "object" && Object.getPrototypeOf(batch) === Object.prototype) {
      Object.values(batch).forEach((b) => this.disposeBatch(b));
    }
  }

  private async optimizerStep(module: TrainingModule): Promise<void> {
    const optimizer = this.optimizer!;
    module.onBeforeOptimizerStep(optimizer);
    this.phase = "optimizer";
    const result = await scopeAsync(() =>
      this.strategy!.optimizerStep(optimizer, {
        gradientClipVal: this.options.gradientClipVal,
        gradientClipAlgorithm: this.options.gradientClipAlgorithm,
      }),
    );
    this.phase = null;
    if (result.gradNorm !== undefined) this.stepMetrics["grad_norm"] = result.gradNorm;
    this.globalStep++;
    if (result.stepped && this.scheduler && this.schedulerInterval === "step" && this.globalStep % this.schedulerFrequency === 0) this.scheduler.step();
  }

  private recordTokens(tokens: number): void {
    const now = performance.now();
    this.tokenWindow.push({ time: now, tokens: tokens * this.worldSize });
    while (this.tokenWindow.length > 20) this.tokenWindow.shift();
    if (this.tokenWindow.length >= 2) {
      const first = this.tokenWindow[0];
      const sum = this.tokenWindow.slice(1).reduce((a, w) => a + w.tokens, 0);
      this.tokensPerSecond = (sum / (now - first.time)) * 1000;
    }
  }

  /** Reads the losses kept since the last read (one device synchronisation) and logs them. */
  private async flushLosses(final: boolean): Promise<number> {
    if (this.pendingLosses.length === 0) {
      if (final) await this.flushStepMetrics();
      return NaN;
    }
    const pending = this.pendingLosses;
    this.pendingLosses = [];
    let micro: number[] = [];
    let last = NaN;
    for (const { step, loss } of pending) {
      micro.push(loss.item());
      loss.dispose();
      if (step >= 0) {
        last = micro.reduce((a, b) => a + b, 0) / micro.length;
        micro = [];
        if (!Number.isFinite(last) && this.options.stopOnNonFiniteLoss) {
          for (const p of pending) if (!p.loss.isDisposed) p.loss.dispose();
          throw new NonFiniteLossError(step, last);
        }
      }
    }
    this.lastLoss = last;
    this.stepMetrics["train_loss"] = last;
    this.accumulateEpoch("train_loss_epoch", last);
    this.callbackMetrics["train_loss"] = last;
    if (final) await this.flushStepMetrics();
    return last;
  }

  private async flushStepMetrics(): Promise<void> {
    const metrics = this.stepMetrics;
    this.stepMetrics = {};
    if (Object.keys(metrics).length === 0) return;
    Object.assign(this.callbackMetrics, metrics);
    if (this.isGlobalZero) for (const l of this.loggers) l.logMetrics({ ...metrics, epoch: this.currentEpoch }, this.globalStep);
  }

  /** Lets callbacks log a number for this step. */
  logMetric(name: string, value: number): void {
    this.stepMetrics[name] = value;
  }

  private accumulateEpoch(name: string, value: number): void {
    if (!Number.isFinite(value)) return;
    const a = this.epochAccum.get(name) ?? { sum: 0, count: 0 };
    a.sum += value;
    a.count++;
    this.epochAccum.set(name, a);
  }

  /**
   * Moves the module's pending logs into step metrics and epoch accumulators (reads tensors).
   * `syncDist` values are averaged over ranks here, in logging order, which is the same on every rank.
   */
  private async collectLogs(module: TrainingModule): Promise<void> {
    const logs: PendingLog[] = module.pendingLogs;
    module.pendingLogs = [];
    for (const log of logs) {
      let v = typeof log.value === "number" ? log.value : log.value.item();
      if (typeof log.value !== "number") log.value.dispose();
      if (log.options.syncDist && this.worldSize > 1) v = await this.strategy!.reduce(v, "avg");
      const both = log.options.onStep && log.options.onEpoch;
      if (log.options.onStep) this.stepMetrics[both ? `${log.name}_step` : log.name] = v;
      if (log.options.onEpoch) this.accumulateEpoch(both ? `${log.name}_epoch` : log.name, v);
      if (log.options.progBar) this.progressBarMetrics[log.name] = v;
    }
  }

  private async logEpochMetrics(_stage: "train" | "validate"): Promise<Metrics> {
    const out: Metrics = {};
    for (const [name, a] of this.epochAccum) {
      // syncDist values were averaged over ranks as they were logged, so this mean is the same on every rank.
      out[name] = a.sum / a.count;
    }
    this.epochAccum.clear();
    Object.assign(this.callbackMetrics, out);
    if (this.isGlobalZero && Object.keys(out).length) {
      for (const l of this.loggers) l.logMetrics({ ...out, epoch: this.currentEpoch }, this.globalStep);
    }
    return out;
  }

  private async runValidation(module: TrainingModule, loader: DataLoader<any, any>, maxBatches: number, sanity: boolean): Promise<Record<string, number>> {
    const saved = this.epochAccum;
    this.epochAccum = new Map();
    module.eval();
    module.stage = "validate";
    module.onValidationEpochStart();
    let i = 0;
    for (const raw of loader.batches(0)) {
      if (i >= maxBatches) {
        this.disposeBatch(raw);
        break;
      }
      const idx = i;
      noGrad(() =>
        scope(() => {
          const batch = toDevice(raw, this.strategy!.rootDevice);
          const out = this.precision.forwardContext(() => module.validationStep(batch, idx));
          if (out !== undefined && !module.pendingLogs.some((l) => l.name === "val_loss")) {
            module.log("val_loss", lossOf(out as StepOutput, "validationStep"), { syncDist: true });
          }
        }),
      );
      this.disposeBatch(raw);
      await this.collectLogs(module);
      i++;
    }
    module.onValidationEpochEnd();
    const metrics = sanity ? {} : await this.logEpochMetrics("validate");
    if (sanity) this.epochAccum.clear();
    this.epochAccum = saved;
    module.stage = "train";
    module.train();
    if (!sanity) await this.callHooks("onValidationEnd");
    return metrics;
  }

  private async callHooks(hook: keyof Callback, ...args: unknown[]): Promise<void> {
    for (const cb of this.callbacks) {
      const fn = cb[hook] as ((...a: unknown[]) => unknown) | undefined;
      if (typeof fn === "function") await fn.call(cb, this, this.module, ...args);
    }
  }

  // ---- checkpoints -------------------------------------------------------------------------------

  private hparams(module: TrainingModule): Record<string, unknown> {
    const { callbacks: _c, logger: _l, plugins, accelerator, strategy, precision: _p, ...rest } = this.options;
    // Hyper-parameters are JSON: objects given as options are recorded by name.
    return {
      trainer: {
        ...rest,
        accelerator: typeof accelerator === "string" ? accelerator : this.accelerator?.name,
        strategy: this.strategy?.name ?? strategy,
        precision: this.precision.name,
        plugins: plugins.map((p) => (p as { name?: unknown }).name ?? p.constructor.name),
      },
      module: module.constructor.name,
      parameters: module.numParameters(),
    };
  }

  /**
   * Saves the full training state to `path` (rank 0 writes for replicated strategies). Every rank
   * calls it. `weightsOnly` (Lightning's `weights_only`) leaves out the optimizer's state and the
   * scheduler: a smaller file (under FSDP and ZeRO, a shorter save) that loads as weights and can
   * start a new run, but cannot resume this one.
   */
  async saveCheckpoint(path: string, options: { weightsOnly?: boolean } = {}): Promise<void> {
    const module = this.module;
    if (!module || !this.strategy) throw new Error("saveCheckpoint: nothing to save before fit() has set the module up");
    const weightsOnly = options.weightsOnly ?? false;
    if (typeof weightsOnly !== "boolean") throw new TypeError(`saveCheckpoint options.weightsOnly: got ${JSON.stringify(weightsOnly)}; expected true or false`);
    const strategy = this.strategy;
    const callbacks: Record<string, unknown> = {};
    for (const cb of this.callbacks) if (cb.stateDict && cb.stateKey) callbacks[cb.stateKey] = cb.stateDict();
    const extra: Record<string, unknown> = {};
    module.onSaveCheckpoint(extra);
    const optimizer = weightsOnly ? null : this.optimizer;
    const build = (moduleState: Record<string, Tensor>, optimizerState: OptimizerState | null): Checkpoint =>
      buildCheckpoint({
        moduleState,
        optimizerState,
        scheduler: weightsOnly ? null : this.scheduler,
        position: this.position,
        extra: {
          fulgur: { package: "@fulgur/trainer", strategy: strategy.name, worldSize: strategy.worldSize },
          precision: this.precision.stateDict(),
          rng: defaultGenerator().getState() as unknown as Record<string, unknown>,
          callbacks,
          module: extra,
          hparams: this.hparams(module),
        },
      });
    // A sharded strategy streams a full save unit by unit rather than gathering the model first.
    if (savesStreamed(strategy) && (await strategy.saveStreamed({ module, optimizer, build }, path))) return;
    const optimizerState: OptimizerState | null = !optimizer
      ? null
      : handlesOptimizerState(strategy)
        ? await strategy.optimizerStateDict(optimizer)
        : namedOptimizerState(optimizer, parameterNames(module));
    await strategy.saveCheckpoint(build(await strategy.moduleStateDict(module), optimizerState), path);
  }

  async removeCheckpoint(path: string): Promise<void> {
    if (this.isGlobalZero) await this.checkpointIO.remove(path);
  }

  private async restore(path: string): Promise<void> {
    const module = this.module!;
    const checkpoint = await this.strategy!.loadCheckpoint(path);
    try {
      const position = loopPositionOf(checkpoint, path);
      await this.strategy!.loadModuleStateDict(module, moduleStateOf(checkpoint));
      const optimizerState = optimizerStateOf(checkpoint, path);
      if (handlesOptimizerState(this.strategy!)) await this.strategy!.loadOptimizerStateDict(this.optimizer!, optimizerState);
      else loadNamedOptimizerState(this.optimizer!, parameterNames(module), optimizerState);
      const meta = checkpoint.meta;
      if (this.scheduler && meta.scheduler) this.scheduler.loadStateDict(meta.scheduler as never);
      if (meta.precision) this.precision.loadStateDict(meta.precision as Record<string, number>);
      if (meta.rng) defaultGenerator().setState(meta.rng as never);
      const cbState = (meta.callbacks ?? {}) as Record<string, Record<string, unknown>>;
      for (const cb of this.callbacks) if (cb.loadStateDict && cb.stateKey && cbState[cb.stateKey]) cb.loadStateDict(cbState[cb.stateKey]);
      module.onLoadCheckpoint((meta.module ?? {}) as Record<string, unknown>);
      this.position = position;
      this.globalStep = position.globalStep;
      this.currentEpoch = position.epoch;
    } finally {
      for (const t of Object.values(checkpoint.tensors)) t.dispose();
    }
  }

  /** Path of the checkpoint directory the default ModelCheckpoint writes to. */
  get checkpointDir(): string {
    return this.modelCheckpoint?.dir(this) ?? join(this.logDir, "checkpoints");
  }
}
