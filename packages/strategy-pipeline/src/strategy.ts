/**
 * PipelineStrategy: the model cut into stages between its blocks, one stage (or v interleaved
 * stages) per rank, each batch run as a schedule of micro-batch forwards and backwards (runBatch),
 * optionally replicated data-parallel over a [stages, replicas] device mesh: "ddp" averages each
 * stage's gradients over its replicas before the step; "fsdp" shards each stage over its replicas
 * (stageSharding.ts). Every stage of one pipeline reads the same batch: the loader shards over
 * replicas only (DataParallelLayout).
 *
 * The step: each rank steps the parameters of its own stages (under "fsdp", its slices of them);
 * clipping by global norm sums the squared norms over the ranks whose gradients make the whole (the
 * pipeline group; every rank under "fsdp") with the kit's StepCollectives.
 *
 * [Note: a rank holds its stages] The model is built on the `meta` device (shapes, no memory) and
 * each rank materialises only its stages' parameters (the embeddings on the first stage, the final
 * norm and head on the last), with the values one device would give: materialising replays each
 * parameter's recorded initialisation on the generator counters it drew at construction, so the
 * values do not depend on which parameters are materialised. Parameters of other stages stay on
 * `meta`; a later stage's call of the embeddings runs on meta (stagedModel.ts, [Note: what precedes
 * the blocks, on later stages]). Checkpoints are
 * sharded (one file per rank and an index, @fulgur/checkpoint-io): each stage's first replica
 * writes its parameters and their optimizer state whole (under "fsdp", every rank its segments of
 * them, as pieces), keyed by name, so a pipeline checkpoint
 * loads into FSDP, DDP or single_device, and any of theirs loads here, each rank reading its own.
 */
import {
  type BatchContext,
  type BatchRunning,
  type Checkpoint,
  type CheckpointIO,
  type MemoryEstimate,
  type MemoryEstimateInput,
  type DataParallelLayout,
  MODEL_PREFIX,
  type ModuleBuilding,
  OPTIMIZER_PREFIX,
  type OptimizerState,
  type OptimizerStateHandling,
  type OptimizerStepOptions,
  type OptimizerStepResult,
  type PrecisionStepOptions,
  type ProcessGroup,
  type StrategyContext,
} from "@fulgur/core";
import {
  FullCheckpointIO,
  type PieceDescription,
  SHARDED_INDEX_FILE,
  SHARDED_PIECES_KEY,
  ShardedCheckpointIO,
  type TensorPart,
  loadShardedCheckpoint,
} from "@fulgur/checkpoint-io";
import type { Module, Optimizer } from "@fulgur/nn";
import type { ShardingEngine } from "@fulgur/sharding";
import {
  DeviceMesh,
  ParallelStrategy,
  StrategySetupError,
  allReduceTensors,
  broadcastJson,
  broadcastTensors,
  loadNamedOptimizerState,
  namedOptimizerState,
} from "@fulgur/strategy-kit";
import { type Tensor, materialize, noGrad, withDevice, zeros } from "@fulgur/tensor";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { type PipelineOptions, type ResolvedPipelineOptions, parsePipelineOptions } from "./api";
import { runActions } from "./executor";
import { splitBatch } from "./microBatches";
import type { PipelineSchedule } from "./schedules/action";
import { buildSchedule } from "./schedules/index";
import { assertValidSchedule } from "./schedules/validate";
import { type Timeline, type TimedAction, summarize } from "./simulator";
import { type SlotAt, heldRange, prepareStepGradients, shardStages, slotsByName } from "./stageSharding";
import { StagedModel } from "./stagedModel";
import { estimatePipelineMemory } from "./memory";

export class PipelineStrategy extends ParallelStrategy implements BatchRunning, DataParallelLayout, ModuleBuilding, OptimizerStateHandling {
  readonly name: string;
  readonly options: ResolvedPipelineOptions;
  private mesh: DeviceMesh | null = null;
  private plan: PipelineSchedule | null = null;
  private staged: StagedModel | null = null;
  /** The sharding engine of this rank's stages ("fsdp"), else null. */
  private sharding: ShardingEngine | null = null;
  /** Each sharded parameter's unit and slot ("fsdp"), else null. */
  private slots: Map<string, SlotAt> | null = null;
  /** The last `loadCheckpoint` read this rank's segments of sharded parameters, not whole tensors. */
  private localSegments = false;
  private recorded: TimedAction[] = [];
  /** Each parameter's name, and the names of the parameters this rank trains (its stages'). */
  private names = new Map<Tensor, string>();
  private owned = new Set<string>();
  /** Every parameter's name: what a checkpoint key is matched against. */
  private paramNames = new Set<string>();

  constructor(options: PipelineOptions = {}, name = "pipeline") {
    const parsed = parsePipelineOptions(options, name);
    super(parsed);
    this.options = parsed;
    this.name = name;
  }

  /** Pipeline ranks p. */
  get stages(): number {
    return this.options.stages ?? (this.options.dataParallel === "none" ? this.worldSize : 1);
  }
  get virtualStages(): number {
    return this.options.virtualStages ?? (this.options.schedule === "interleaved" ? 2 : 1);
  }
  get dataParallelSize(): number {
    return Math.max(1, Math.floor(this.worldSize / this.stages));
  }
  /** Mesh [stages, replicas], row-major: global rank = stage · replicas + replica. */
  get dataParallelRank(): number {
    return this.globalRank % this.dataParallelSize;
  }
  /** This rank's place in its pipeline. */
  get stageRank(): number {
    return Math.floor(this.globalRank / this.dataParallelSize);
  }
  get schedule(): PipelineSchedule {
    if (!this.plan) throw new Error(`${this.name}: setup() must run before the schedule is known`);
    return this.plan;
  }

  private get pipeGroup(): ProcessGroup {
    if (!this.mesh) throw new Error(`${this.name}: setup() must run before training`);
    return this.mesh.group("pipe");
  }

  /** The schedule for `world` processes, or the error that names what does not fit. */
  private planFor(world: number): PipelineSchedule {
    const p = this.options.stages ?? (this.options.dataParallel === "none" ? world : 1);
    if (world % p !== 0 || (this.options.dataParallel === "none" && p !== world)) {
      throw new StrategySetupError(
        `${this.name}: ${p} stages on ${world} processes; with dataParallel ${JSON.stringify(this.options.dataParallel)} ` +
          (this.options.dataParallel === "none" ? "stages must equal the world size" : "stages must divide the world size"),
      );
    }
    try {
      return assertValidSchedule(buildSchedule(this.options.schedule, { stages: p, microBatches: this.options.microBatches, virtualStages: this.virtualStages }));
    } catch (e) {
      throw new StrategySetupError(`${this.name}: ${(e as Error).message}`);
    }
  }

  /** Refuses a shape that cannot run before any rank starts (the launcher knows the world size). */
  override async launch(context: { devices: number; numNodes: number; script: string; argv: readonly string[] }): Promise<"continue" | "done"> {
    this.planFor(context.devices * context.numNodes);
    return super.launch(context);
  }

  override async setup(context: StrategyContext): Promise<void> {
    await super.setup(context);
    const world = this.worldSize;
    this.plan = this.planFor(world);
    const p = this.stages;
    this.mesh = await DeviceMesh.create(this.processGroup, [p, world / p], ["pipe", "replica"]);
  }

  /** The stages this rank runs: r, r+p, ... */
  private get ownedStages(): number[] {
    return Array.from({ length: this.virtualStages }, (_, c) => c * this.stages + this.stageRank);
  }

  /** Builds the model on `meta`; setupModule gives this rank's stages memory ([Note: a rank holds its stages]). */
  async buildModule(_module: Module, configure: () => void): Promise<void> {
    withDevice("meta", configure);
  }

  override async setupModule(module: Module): Promise<Module> {
    const o = this.options;
    const onMeta = module.parameters().some((p) => p.device === "meta");
    this.staged = new StagedModel(module, { blocks: o.blocks, splitPoints: o.splitPoints, balance: o.balance, stages: this.stages * this.virtualStages });
    const owned = this.ownedStages;
    this.owned = new Set(this.staged.namesOf(owned));
    const count = this.staged.parametersOf(owned).reduce((sum, p) => sum + p.numel, 0);
    if (o.dataParallel === "fsdp") {
      if (onMeta) noGrad(() => materialize(module.buffers(), this.rootDevice));
      else module.to(this.rootDevice);
      const group = this.mesh!.group("replica");
      this.sharding = await shardStages({
        module,
        blockPaths: this.staged.blockPaths(owned),
        owned: this.owned,
        group,
        device: this.rootDevice,
        prefetch: 1,
        sameOnReplicas: (tensors) => broadcastTensors(group, tensors, 0, this.race),
      });
      this.slots = slotsByName(this.sharding);
    } else if (onMeta) {
      const tensors = module.namedParameters().filter(([n]) => this.owned.has(n)).map(([, p]) => p);
      noGrad(() => materialize([...tensors, ...module.buffers()], this.rootDevice));
    } else await super.setupModule(module);
    // After sharding: the module holds the tensors the optimizer steps (its slices, under "fsdp").
    this.names = new Map(module.namedParameters().map(([n, p]) => [p, n]));
    this.paramNames = new Set(this.names.values());
    this.staged.install(owned);
    this.log(
      `${this.name}: ${o.schedule} schedule, ${this.stages} stages × ${this.dataParallelSize} replicas, ${o.microBatches} micro-batches; ` +
        `blocks cut at [${this.staged.bounds.join(", ")}]; rank 0 trains ${count.toLocaleString("en-US")} parameters`,
    );
    return module;
  }

  runBatch(context: BatchContext): Tensor {
    const staged = this.staged;
    if (!staged) throw new Error(`${this.name}: setupModule() must run before runBatch`);
    const m = this.options.microBatches;
    const group = this.pipeGroup;
    if (this.sharding) prepareStepGradients(this.sharding);
    const { lossSum, timeline } = runActions({
      schedule: this.schedule,
      rank: group.rank,
      group,
      model: staged,
      device: this.rootDevice,
      microBatches: splitBatch(context.batch, m),
      trainingStep: context.trainingStep,
      lossScale: 1 / (m * context.lossDivisor),
      backwardLoss: (loss) => this.precision.backward(loss),
    });
    this.recorded = timeline;
    // Every rank reports the batch's loss: the last stage's mean, broadcast over the pipeline
    // (and averaged over replicas, as DDP's logged loss is).
    const loss = noGrad(() => (lossSum ? lossSum.div(m) : zeros([1], { dtype: "float32", device: this.rootDevice })));
    if (group.size > 1) group.broadcast(loss, group.size - 1).synchronize();
    const replicas = this.mesh!.group("replica");
    if (replicas.size > 1) replicas.allReduce(loss, "avg").synchronize();
    return loss;
  }

  /** Each rank's stages, embeddings and in-flight micro-batches, walked through the schedule (memory.ts). */
  override estimateMemory(input: MemoryEstimateInput): MemoryEstimate {
    const schedule = this.planFor(input.worldSize ?? this.worldSize);
    const o = this.options;
    const staged = new StagedModel(input.module, { blocks: o.blocks, splitPoints: o.splitPoints, balance: o.balance, stages: schedule.stages * schedule.virtualStages });
    return estimatePipelineMemory(this.name, input, { schedule, staged });
  }

  /** This rank's compute actions of the last batch, wall-clock (ms since the epoch). */
  lastTimeline(): readonly TimedAction[] {
    return this.recorded;
  }

  /** The last batch's timeline of every rank of this pipeline (a collective over the pipeline group). */
  async gatherTimeline(): Promise<Timeline> {
    const group = this.pipeGroup;
    const ranks: TimedAction[][] = [];
    for (let r = 0; r < group.size; r++) ranks.push(await broadcastJson(group, this.recorded, r, this.race));
    const s = this.schedule;
    return summarize({ schedule: s.name, stages: s.stages, microBatches: s.microBatches, virtualStages: s.virtualStages }, ranks);
  }

  /** Averages each stage's gradients over its replicas ("ddp"); the step's norm is summed over the pipeline. */
  protected override async prepareStep(optimizer: Optimizer): Promise<Partial<PrecisionStepOptions>> {
    if (this.sharding) {
      // Each rank's slices are its own: the norm is a sum over every rank.
      return { gradients: this.sharding.finishGradients(), collectives: this.stepCollectives(this.processGroup) };
    }
    const replicas = this.mesh!.group("replica");
    if (replicas.size > 1) {
      const grads = optimizer.paramGroups.flatMap((g) => g.params).flatMap((p) => (p.grad ? [p.grad] : []));
      await allReduceTensors(replicas, grads, "avg", this.race);
    }
    return { collectives: this.stepCollectives(this.pipeGroup) };
  }

  // ---- checkpoints ([Note: a rank holds its stages]) ------------------------------------------------

  /** One file per rank and an index: each rank writes its own stages. */
  protected override defaultCheckpointIO(): CheckpointIO {
    return new ShardedCheckpointIO({
      rank: this.globalRank,
      worldSize: this.worldSize,
      barrier: () => this.barrier("checkpoint"),
      broadcast: (v) => this.broadcast(v),
    });
  }

  /** The parameters (and buffers) this rank trains, whole (its segments of them under "fsdp"); nothing of other stages. */
  override async moduleStateDict(module: Module): Promise<Record<string, Tensor>> {
    const out: Record<string, Tensor> = {};
    for (const [name, p] of module.namedParameters()) if (this.owned.has(name)) out[name] = p;
    for (const [name, at] of this.slots ?? []) out[name] = at.unit.resident ? at.unit.optimParams[at.index] : at.unit.localSegment(at.index);
    for (const [name, b] of module.namedBuffers()) if (b.device !== "meta") out[name] = b;
    return out;
  }

  /** This rank's parameters out of a state from any strategy (a full state, or this rank's part of a sharded one). */
  override async loadModuleStateDict(module: Module, state: Record<string, Tensor>): Promise<void> {
    const missing = [...this.owned].filter((n) => !(n in state));
    if (missing.length > 0) throw new Error(`${this.name}: the checkpoint has no ${missing.slice(0, 3).join(", ")}${missing.length > 3 ? ", ..." : ""}`);
    const engine = this.sharding;
    if (engine) {
      for (const unit of engine.units) {
        const values = unit.layout.slots.map((slot) => state[slot.fqn]);
        if (this.localSegments && !unit.resident) unit.loadSegments(values);
        else unit.loadFull(values);
      }
    }
    noGrad(() => {
      const plain = engine ? module.namedBuffers() : [...module.namedParameters(), ...module.namedBuffers()];
      for (const [name, p] of plain) {
        const value = state[name];
        if (value && p.device !== "meta") p.copy_(value.to(p.device));
      }
    });
    engine?.afterStep();
    for (const t of Object.values(state)) t.dispose();
  }

  /** This rank's optimizer state by name, with every stage's step counts (gathered) so any strategy can load it. */
  async optimizerStateDict(optimizer: Optimizer): Promise<OptimizerState> {
    const mine = namedOptimizerState(optimizer, (p) => this.names.get(p));
    const meta = mine.meta as unknown as { state: Record<string, Record<string, number>> };
    const all: Record<string, Record<string, number>> = {};
    for (let r = 0; r < this.worldSize; r++) Object.assign(all, await this.broadcast(meta.state, r));
    return { tensors: mine.tensors, meta: { ...mine.meta, state: all } as never };
  }

  async loadOptimizerStateDict(optimizer: Optimizer, state: OptimizerState): Promise<void> {
    const local = this.localSegments;
    this.localSegments = false;
    const slots = this.slots;
    loadNamedOptimizerState(optimizer, (p) => this.names.get(p), state, (p, value) => {
      const at = slots?.get(this.names.get(p)!);
      return !at || (local && !at.unit.resident) ? value : at.unit.sliceOf(at.index, value);
    });
  }

  /** The first replica of each stage writes its parameters whole ("fsdp": every rank its segments), as pieces of the named tensors. */
  override async saveCheckpoint(checkpoint: Checkpoint, path: string): Promise<void> {
    if (this.checkpointIO.name !== "sharded") {
      throw new Error(
        `${this.name}: pipeline checkpoints are sharded (each stage's rank writes its own parameters); the chosen checkpoint IO is ` +
          `"${this.checkpointIO.name}". Use the default one, then \`fulgur checkpoint convert\` for a single file.`,
      );
    }
    const writes = this.sharding !== null || this.dataParallelRank === 0;
    const tensors: Record<string, Tensor> = {};
    const pieces: Record<string, PieceDescription> = {};
    for (const [key, t] of Object.entries(checkpoint.tensors)) {
      const name = this.paramOfKey(key);
      if (name === undefined) {
        tensors[key] = t;
        continue;
      }
      if (!writes) continue;
      const range = heldRange(this.slots, name, t);
      // An empty piece says nothing: the other replicas' pieces cover the tensor.
      if (range.end === range.start) continue;
      tensors[key] = t;
      pieces[key] = { name: key, ...range };
    }
    await this.checkpointIO.save({ tensors, meta: { ...checkpoint.meta, [SHARDED_PIECES_KEY]: pieces } }, path);
  }

  /**
   * Reads this rank's parameters and their state, and everything else whole, from a sharded
   * checkpoint (under "fsdp", this rank's segments) or a full file (single_device, DDP, FSDP "full").
   */
  override async loadCheckpoint(path: string): Promise<Checkpoint> {
    const device = this.rootDevice;
    const sharded = existsSync(join(path, SHARDED_INDEX_FILE));
    const { tensors, meta } = sharded
      ? await loadShardedCheckpoint(path, { device, part: (key) => this.partOf(key) })
      : await new FullCheckpointIO().load(path, { device, select: (key) => this.partOf(key) !== null });
    if (sharded) this.localSegments = this.sharding !== null;
    // The optimizer tensors the checkpoint lists, as far as this rank read them (the Trainer checks they are all there).
    const read = { ...meta };
    if (Array.isArray(read.optimizer_tensors)) read.optimizer_tensors = read.optimizer_tensors.filter((n) => typeof n === "string" && n in tensors);
    return { tensors, meta: read };
  }

  /** What of a checkpoint tensor this rank reads: nothing of other stages' parameters, its segment of a sharded one, else all. */
  private partOf(key: string): TensorPart {
    const name = this.paramOfKey(key);
    if (name !== undefined && !this.owned.has(name)) return null;
    const at = name === undefined ? undefined : this.slots?.get(name);
    const seg = at && !at.unit.resident ? at.unit.segments[at.index] : undefined;
    return seg ? { start: seg.start, end: seg.end } : undefined;
  }

  /** The parameter a checkpoint key belongs to (model.<name> or optimizer.state.<name>.<state>), or undefined. */
  private paramOfKey(key: string): string | undefined {
    if (key.startsWith(MODEL_PREFIX)) {
      const name = key.slice(MODEL_PREFIX.length);
      return this.paramNames.has(name) ? name : undefined;
    }
    const prefix = `${OPTIMIZER_PREFIX}state.`;
    if (!key.startsWith(prefix)) return undefined;
    const rest = key.slice(prefix.length);
    const name = rest.slice(0, rest.lastIndexOf("."));
    return this.paramNames.has(name) ? name : undefined;
  }

  override async optimizerStep(optimizer: Optimizer, options: OptimizerStepOptions): Promise<OptimizerStepResult> {
    const result = await super.optimizerStep(optimizer, options);
    this.sharding?.afterStep();
    return result;
  }

  protected override releaseModule(): void {
    this.staged?.release();
    this.staged = null;
    this.sharding?.remove();
    this.sharding = null;
    this.slots = null;
  }
}
