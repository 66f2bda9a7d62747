/**
 * PipelineStrategy: the model cut into stages between its blocks, one stage (or v interleaved
 * stages) per rank, each batch run as a schedule of micro-batch forwards and backwards (runBatch),
 * optionally replicated data-parallel ("ddp": a [stages, replicas] device mesh; each stage's
 * gradients averaged over its replicas before the step). Every stage of one pipeline reads the same
 * batch: the loader shards over replicas only (DataParallelLayout).
 *
 * The step: each rank steps the parameters of its own stages; clipping by global norm sums the
 * stages' squared norms over the pipeline group (the kit's StepCollectives).
 */
import type { BatchContext, BatchRunning, DataParallelLayout, PrecisionStepOptions, ProcessGroup, StrategyContext } from "@fulgur/core";
import type { Module, Optimizer } from "@fulgur/nn";
import { DeviceMesh, ParallelStrategy, StrategySetupError, allReduceTensors, broadcastJson, broadcastTensors } from "@fulgur/strategy-kit";
import { type Tensor, noGrad, zeros } from "@fulgur/tensor";
import { type PipelineOptions, type ResolvedPipelineOptions, parsePipelineOptions } from "./api";
import { runActions } from "./executor";
import { splitBatch } from "./microBatches";
import type { PipelineSchedule } from "./schedules/action";
import { buildSchedule } from "./schedules/index";
import { assertValidSchedule } from "./schedules/validate";
import { type Timeline, type TimedAction, summarize } from "./simulator";
import { StagedModel } from "./stagedModel";

export class PipelineStrategy extends ParallelStrategy implements BatchRunning, DataParallelLayout {
  readonly name: string;
  readonly options: ResolvedPipelineOptions;
  private mesh: DeviceMesh | null = null;
  private plan: PipelineSchedule | null = null;
  private staged: StagedModel | null = null;
  private recorded: TimedAction[] = [];

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

  override async setupModule(module: Module): Promise<Module> {
    await super.setupModule(module);
    const o = this.options;
    this.staged = new StagedModel(module, { blocks: o.blocks, splitPoints: o.splitPoints, balance: o.balance, stages: this.stages * this.virtualStages });
    this.staged.install(this.ownedStages);
    const count = this.staged.parametersOf(this.ownedStages).reduce((s, p) => s + p.numel, 0);
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
    const replicas = this.mesh!.group("replica");
    if (replicas.size > 1) {
      const grads = optimizer.paramGroups.flatMap((g) => g.params).flatMap((p) => (p.grad ? [p.grad] : []));
      await allReduceTensors(replicas, grads, "avg", this.race);
    }
    return { collectives: this.stepCollectives(this.pipeGroup) };
  }

  /** Brings every stage's trained parameters to every rank of the pipeline, then the full state as usual. */
  override async moduleStateDict(module: Module): Promise<Record<string, Tensor>> {
    const staged = this.staged;
    const group = this.pipeGroup;
    if (staged && group.size > 1) {
      for (let r = 0; r < group.size; r++) {
        const stages = Array.from({ length: this.virtualStages }, (_, c) => c * this.stages + r);
        await broadcastTensors(group, staged.parametersOf(stages), r, this.race);
      }
    }
    return super.moduleStateDict(module);
  }

  protected override releaseModule(): void {
    this.staged?.release();
    this.staged = null;
  }
}
