/**
 * FSDPStrategy: fully sharded data parallel training (Lightning's FSDPStrategy, over FSDP2's
 * design) on the kit's ParallelStrategy and the sharding engine. The strategy decides the layout
 * (which modules are units, over which ranks they are sharded and replicated, mixed precision,
 * activation checkpointing); the engine moves the data. Checkpoints name each parameter by its
 * fully qualified name, so FSDP at any world size, DDP and single_device read each other's.
 */
import {
  type Checkpoint,
  type CheckpointIO,
  MODEL_PREFIX,
  OPTIMIZER_PREFIX,
  type ProcessGroup,
} from "@fulgur/core";
import type {
  MemoryEstimate,
  MemoryEstimateInput,
  ModuleBuilding,
  OptimizerState,
  OptimizerStateHandling,
  OptimizerStepOptions,
  OptimizerStepResult,
  PrecisionStepOptions,
  StreamedSaveInput,
  StreamedSaving,
} from "@fulgur/core";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { type PieceDescription, SHARDED_INDEX_FILE, SHARDED_PIECES_KEY, ShardedCheckpointIO, loadShardedCheckpoint } from "@fulgur/checkpoint-io";
import { type Module, type Optimizer, materializeModule } from "@fulgur/nn";
import {
  type EngineOptions,
  type FlatUnit,
  type OffloadKeep,
  type ShardingStrategy,
  ShardingEngine,
  type UnitGroups,
  type UnitOptions,
  planUnits,
  estimateShardedMemory,
  saveFullStreamed,
  streamsTensors,
  stepBesideBackwardRefusal,
} from "@fulgur/sharding";
import {
  DeviceMesh,
  ParallelStrategy,
  SoloGroup,
  loadNamedOptimizerState,
  namedOptimizerState,
  type StateEntry,
} from "@fulgur/strategy-kit";
import { type DType, type Tensor, noGrad, scope, withDevice } from "@fulgur/tensor";
import { applyActivationCheckpointing } from "./activationCheckpointing";
import { type FSDPOptions, FSDPOptionError, type ResolvedFSDPOptions, type ResolvedFullyShardOptions, parseFSDPOptions } from "./api";
import { fullyShardOptions, markedModules } from "./fullyShard";
import { moduleListElements, selectModules } from "./wrapPolicy";

export class FSDPStrategy extends ParallelStrategy implements ModuleBuilding, OptimizerStateHandling, StreamedSaving {
  readonly name: string;
  readonly options: ResolvedFSDPOptions;
  private engine: ShardingEngine | null = null;
  private groups: UnitGroups | null = null;
  /** Post-forward groups by size k, one for each integer reshardAfterForward (the strategy's and the units'). */
  private readonly postForwardGroups = new Map<number, ProcessGroup>();
  private undoCheckpointing: (() => void) | null = null;
  /** The full-shape name of each segment the optimizer steps. */
  private readonly segmentNames = new Map<Tensor, { unit: FlatUnit; index: number }>();

  constructor(options: FSDPOptions = {}, name = "fsdp") {
    const parsed = parseFSDPOptions(options, name);
    super(parsed);
    this.options = parsed;
    this.name = name;
  }

  get shardingStrategy(): ShardingStrategy {
    return this.options.shardingStrategy;
  }

  /** The sharding engine (after setupModule), for tests and tools. */
  get sharding(): ShardingEngine {
    if (!this.engine) throw new Error(`${this.name}: setupModule() must run first`);
    return this.engine;
  }

  // ---- building and sharding -------------------------------------------------------------------

  /**
   * Builds the module on the `meta` device (shapes only), so no rank ever holds the whole model:
   * setupModule then materialises, initialises and shards one unit at a time.
   */
  async buildModule(_module: Module, configure: () => void): Promise<void> {
    withDevice("meta", configure);
  }

  /** `unitOptions`: what `fullyShard` gave the marked modules, whose integer reshardAfterForward need groups too. */
  private async processGroups(unitOptions: ReadonlyMap<string, ResolvedFullyShardOptions>): Promise<UnitGroups> {
    const world = this.processGroup;
    const mode = this.options.shardingStrategy;
    this.postForwardGroups.clear();
    for (const [path, own] of unitOptions) {
      if (typeof own.reshardAfterForward === "number") this.checkPostForward(own.reshardAfterForward, `fullyShard(${path || "the root"}) option reshardAfterForward`);
    }
    if (mode === "NO_SHARD") return { shard: new SoloGroup(world.ranks[world.rank]), replicate: world.size > 1 ? world : null };
    const k = this.options.reshardAfterForward;
    if (typeof k === "number") this.checkPostForward(k, "option reshardAfterForward");
    // Every rank makes the same groups in the same order: the marks come from the same configureModel.
    const sizes = [...new Set([k, ...[...unitOptions.values()].map((o) => o.reshardAfterForward)].filter((v): v is number => typeof v === "number"))].sort((a, b) => a - b);
    for (const size of sizes) {
      const mesh = await DeviceMesh.create(world, [world.size / size, size], ["outer", "postForward"]);
      this.postForwardGroups.set(size, mesh.group("postForward"));
    }
    if (typeof k === "number") return { shard: world, replicate: null, postForward: this.postForwardGroups.get(k) };
    if (mode !== "HYBRID_SHARD") return { shard: world, replicate: null };
    const [replicas, shards] = this.options.deviceMesh ?? [this.context.numNodes, this.context.devices];
    if (replicas * shards !== world.size) {
      throw new FSDPOptionError(
        "deviceMesh",
        `${this.name} option deviceMesh: [${replicas}, ${shards}] holds ${replicas * shards} ranks; the world has ${world.size} (give [replicas, shards] whose product is the world size)`,
      );
    }
    const mesh = await DeviceMesh.create(world, [replicas, shards], ["replicate", "shard"]);
    return { shard: mesh.group("shard"), replicate: replicas > 1 ? mesh.group("replicate") : null };
  }

  /** An integer reshardAfterForward k (the strategy's, or a unit's: `where` says which) needs FULL_SHARD and 1 < k < world, k dividing it. */
  private checkPostForward(k: number, where: string): void {
    const mode = this.options.shardingStrategy;
    const world = this.processGroup.size;
    if (mode !== "FULL_SHARD" || k >= world || world % k !== 0) {
      throw new FSDPOptionError(
        "reshardAfterForward",
        `${this.name} ${where}: ${k} with ${mode} over ${world} rank(s); an integer needs FULL_SHARD and must divide the world size, 1 < k < ${world} (or use true or false)`,
      );
    }
  }

  /** A unit's engine settings from its `fullyShard` options: what it leaves out stays the strategy's. */
  private unitSettings(own: ResolvedFullyShardOptions | undefined): UnitOptions | undefined {
    if (!own) return undefined;
    const k = own.reshardAfterForward;
    const strategy = this.options.mixedPrecision;
    const mixedPrecision = Object.freeze({
      paramDtype: own.mixedPrecision.paramDtype ?? strategy.paramDtype ?? null,
      reduceDtype: own.mixedPrecision.reduceDtype ?? strategy.reduceDtype ?? null,
    });
    if (k === null) return Object.freeze({ mixedPrecision });
    // true frees the whole buffer after forward even where the strategy keeps a post-forward group.
    const postForward = typeof k === "number" ? this.postForwardGroups.get(k)! : null;
    return Object.freeze({ mixedPrecision, reshardAfterForward: k !== false, groups: Object.freeze({ ...this.groups!, postForward }) });
  }

  /**
   * [Note: per-unit offload] FSDP2 takes `offload_policy` per `fully_shard` call. A unit's
   * `cpuOffload` (else the strategy's) says where its master slice, gradient slice and optimizer
   * state live; the engine places units apart as ZeRO's `offload_optimizer.ratio` does ([Note: units
   * kept on the device] in @fulgur/sharding): its offload is on as soon as one unit is offloaded,
   * and its `keep` lists the units that are not. Those are still gathered for each forward and
   * backward, from their slice on the device (no upload). `units`: the wrapped paths; the root unit
   * ("") is placed by its own mark or the strategy's option.
   */
  private offloadPlacement(units: readonly string[], own: ReadonlyMap<string, ResolvedFullyShardOptions>): { offload: boolean; keep: OffloadKeep | null } {
    const all = [...units, ""];
    const offloaded = all.filter((path) => this.unitOffloaded(path, own));
    if (offloaded.length === 0) return { offload: false, keep: null };
    const kept = all.filter((path) => !offloaded.includes(path));
    return { offload: true, keep: kept.length === 0 ? null : Object.freeze({ optimizerState: Object.freeze(kept), parameters: Object.freeze([]) }) };
  }

  /** Whether a unit's slices and optimizer state live in host memory: its own `cpuOffload`, else the strategy's. */
  private unitOffloaded(path: string, own: ReadonlyMap<string, ResolvedFullyShardOptions>): boolean {
    return own.get(path)?.cpuOffload ?? this.options.cpuOffload;
  }

  /** The dtype a unit gathers and computes in: its own paramDtype, else the strategy's, else fp32 (the master's). */
  private unitParamDtype(path: string, own: ReadonlyMap<string, ResolvedFullyShardOptions>): DType {
    return own.get(path)?.mixedPrecision.paramDtype ?? this.options.mixedPrecision.paramDtype ?? "float32";
  }

  /** Units ("" for the root) that gather in a paramDtype other than fp32, with it. */
  private computeDtypes(units: readonly string[], own: ReadonlyMap<string, ResolvedFullyShardOptions>): ReadonlyMap<string, DType> {
    return new Map([...units, ""].map((path) => [path, this.unitParamDtype(path, own)] as const).filter(([, dtype]) => dtype !== "float32"));
  }

  /** Whether an offloaded unit computes in a paramDtype other than its fp32 master's (its gathers cast: [Note: upload one unit ahead] in @fulgur/sharding). */
  private offloadedUnitsCast(units: readonly string[], own: ReadonlyMap<string, ResolvedFullyShardOptions>): boolean {
    return units.some((path) => this.unitOffloaded(path, own) && this.unitParamDtype(path, own) !== "float32");
  }

  /**
   * The share of the offloaded step streamed through the device (offloadStepShare), refused when no
   * unit is offloaded: per-unit `cpuOffload` marks are known only once the module is built, so here.
   */
  private stepShare(placement: { offload: boolean }): number {
    const share = this.options.offloadStepShare;
    if (share > 0 && !placement.offload) {
      throw new FSDPOptionError(
        "offloadStepShare",
        `${this.name} option offloadStepShare: got ${share}; it streams offloaded optimizer state through the device, but no unit is offloaded (cpuOffload on the strategy or in a unit's fullyShard); offload or leave offloadStepShare out`,
      );
    }
    return share;
  }

  /**
   * offloadStepInBackward, refused where it cannot act or would change the numbers: no unit
   * offloaded, fp16 loss scaling, or a Trainer that clips (their factor needs every gradient before
   * any unit is updated). A step asked to clip in a loop of one's own is refused by the engine.
   */
  private stepInBackward(placement: { offload: boolean }, module: Module): boolean {
    if (!this.options.offloadStepInBackward) return false;
    const precision = this.precision.name;
    const clip = (module as unknown as { trainer?: { options?: { gradientClipVal?: unknown } } | null }).trainer?.options?.gradientClipVal;
    const message = stepBesideBackwardRefusal(this.name, {
      notOffloaded: placement.offload ? null : { why: "no unit is offloaded (cpuOffload on the strategy or in a unit's fullyShard)", instead: "Offload" },
      clip: typeof clip === "number" && clip > 0 ? { by: `the Trainer clips gradients (gradientClipVal ${clip})`, instead: "Drop gradientClipVal" } : null,
      lossScaling: precision.startsWith("16") ? `precision ${JSON.stringify(precision)}` : null,
    });
    if (message !== null) throw new FSDPOptionError("offloadStepInBackward", message);
    return true;
  }

  private engineOptions(placement: { offload: boolean; keep: OffloadKeep | null }, stepBesideBackward = false): EngineOptions {
    const o = this.options;
    const full = o.shardingStrategy === "FULL_SHARD" || o.shardingStrategy === "HYBRID_SHARD";
    return Object.freeze({
      shardingStrategy: o.shardingStrategy,
      mixedPrecision: Object.freeze({ paramDtype: o.mixedPrecision.paramDtype ?? null, reduceDtype: o.mixedPrecision.reduceDtype ?? null }),
      prefetch: o.forwardPrefetch || o.backwardPrefetch !== null ? o.limitAllGathers : 0,
      reshardAfterForward: o.reshardAfterForward === null ? full : o.reshardAfterForward !== false,
      offload: placement.offload,
      deviceStepShare: this.stepShare(placement),
      stepBesideBackward,
      keep: placement.keep,
    });
  }

  override async setupModule(module: Module): Promise<Module> {
    const unitOptions = fullyShardOptions(module);
    this.groups = await this.processGroups(unitOptions);
    const device = this.rootDevice;
    const marked = markedModules(module);
    const paths =
      marked.length > 0 ? marked : this.options.autoWrapPolicy === null ? moduleListElements(module) : selectModules(module, this.options.autoWrapPolicy);
    if (this.options.activationCheckpointingPolicy !== null) {
      const picked = selectModules(module, this.options.activationCheckpointingPolicy).map((p) => module.getSubmodule(p));
      this.undoCheckpointing = applyActivationCheckpointing(picked);
    }
    const placement = this.offloadPlacement(paths, unitOptions);
    const engine = new ShardingEngine(module, this.groups, this.engineOptions(placement, this.stepInBackward(placement, module)), device);
    const onMeta = module.parameters().some((p) => p.device === "meta");
    if (!onMeta) module.to(device);
    for (const plan of planUnits(module, paths)) {
      // Deferred init: this unit's parameters get memory and their initial values now, are copied
      // into this rank's slice, and are freed; the next unit follows.
      if (onMeta) noGrad(() => scope(() => materializeUnit(module, plan.path, paths, device)));
      const params = plan.params.map((p) => ({ fqn: p.fqn, tensor: module.getParameter(p.fqn) }));
      if (!onMeta && this.worldSize > 1) await this.broadcastTensors(params.map((p) => p.tensor), 0);
      engine.addUnit({ path: plan.path, params, options: this.unitSettings(unitOptions.get(plan.path)) });
    }
    if (onMeta) materializeModule(module, device);
    engine.ready();
    this.engine = engine;
    this.segmentNames.clear();
    for (const unit of engine.units) unit.optimParams.forEach((p, index) => this.segmentNames.set(p, { unit, index }));
    const offloaded = engine.units.filter((u) => u.onHost).length;
    const mixed = offloaded > 0 && offloaded < engine.units.length ? `; ${offloaded} of ${engine.units.length} unit(s) offloaded to host memory` : "";
    this.log(
      `${this.name}: ${engine.units.length} unit(s) (${paths.length} wrapped), ${this.options.shardingStrategy} over ` +
        `${this.groups.shard.size} rank(s)${this.groups.replicate ? ` × ${this.groups.replicate.size} replicas` : ""}${mixed}${engine.describeOffloadedStep()}`,
    );
    return module;
  }

  override async setupOptimizer(optimizer: Optimizer): Promise<Optimizer> {
    const foreign = optimizer.paramGroups.flatMap((g) => g.params).filter((p) => !this.segmentNames.has(p));
    if (foreign.length > 0) {
      throw new Error(
        `${this.name}: the optimizer holds ${foreign.length} tensor(s) that are not the sharded module's parameters; ` +
          "build it in configureOptimizers from this.parameters() (FSDP replaces the parameters when it shards the module)",
      );
    }
    this.sharding.attachOptimizer(optimizer);
    return optimizer;
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

  protected override async prepareStep(): Promise<Partial<PrecisionStepOptions>> {
    const gradients = this.sharding.finishGradients();
    // Replicas hold the same slices: the norm is a sum over one shard group.
    return { gradients, collectives: this.stepCollectives(this.groups!.shard) };
  }

  override async optimizerStep(optimizer: Optimizer, options: OptimizerStepOptions): Promise<OptimizerStepResult> {
    // On the host's shared memory, with the share streamed through the device (offloadStepShare).
    const clips = (options.gradientClipVal ?? 0) > 0;
    const result = await this.sharding.step(optimizer, () => super.optimizerStep(optimizer, options), clips);
    this.sharding.afterStep();
    return result;
  }

  // ---- checkpoints -----------------------------------------------------------------------------

  /** "sharded": every rank writes its own slices, one file per rank and an index (checkpoint-io's sharded format). */
  protected override defaultCheckpointIO(): CheckpointIO {
    if (this.options.stateDictType !== "sharded") return super.defaultCheckpointIO();
    return new ShardedCheckpointIO({
      rank: this.globalRank,
      worldSize: this.worldSize,
      barrier: () => this.barrier("checkpoint"),
      broadcast: (v) => this.broadcast(v),
    });
  }

  private get sharded(): boolean {
    return this.options.stateDictType === "sharded";
  }

  /**
   * A full save streamed unit by unit (streamedSave.ts) when the checkpoint IO can take its tensors
   * one at a time; a sharded save, or another IO, goes the usual way.
   */
  async saveStreamed(input: StreamedSaveInput, path: string): Promise<boolean> {
    const io = this.checkpointIO;
    if (this.sharded || !streamsTensors(io)) return false;
    await saveFullStreamed(input, this.sharding.units, (p) => this.segmentNames.get(p), this.isGlobalZero, (tensors, meta) => io.saveStreamed(tensors, meta, path));
    await this.barrier("saveCheckpoint");
    return true;
  }

  /** Every rank saves: its slices are described as pieces of the named whole tensors. */
  override async saveCheckpoint(checkpoint: Checkpoint, path: string): Promise<void> {
    if (!this.sharded) return super.saveCheckpoint(checkpoint, path);
    if (this.checkpointIO.name !== "sharded") {
      throw new Error(`${this.name}: stateDictType "sharded" needs the sharded checkpoint IO; the chosen one is "${this.checkpointIO.name}" (use stateDictType "full" with it)`);
    }
    const bySlot = new Map<string, { shape: readonly number[]; start: number; end: number }>();
    for (const unit of this.sharding.units) {
      if (unit.resident) continue;
      unit.segments.forEach((seg) => bySlot.set(seg.slot.fqn, { shape: seg.slot.shape, start: seg.start, end: seg.end }));
    }
    const tensors: Record<string, Tensor> = {};
    const pieces: Record<string, PieceDescription> = {};
    for (const [key, t] of Object.entries(checkpoint.tensors)) {
      const fqn = key.startsWith(MODEL_PREFIX) ? key.slice(MODEL_PREFIX.length) : stateParam(key, bySlot);
      const seg = fqn === undefined ? undefined : bySlot.get(fqn);
      if (!seg) {
        tensors[key] = t;
        continue;
      }
      // An empty piece says nothing: the other ranks' pieces cover the tensor.
      if (seg.end === seg.start) continue;
      tensors[key] = t;
      pieces[key] = { name: key, shape: seg.shape, start: seg.start, end: seg.end };
    }
    await this.checkpointIO.save({ tensors, meta: { ...checkpoint.meta, [SHARDED_PIECES_KEY]: pieces } }, path);
  }

  /**
   * A sharded checkpoint is read range by range: each rank reads only its segments of the sharded
   * parameters and their optimizer state (whatever world size wrote it), and the rest whole. The
   * segments then go straight into the slices ([Note: local segments]).
   */
  override async loadCheckpoint(path: string): Promise<Checkpoint> {
    if (!existsSync(join(path, SHARDED_INDEX_FILE))) return super.loadCheckpoint(path);
    const mine = new Map<string, { start: number; end: number }>();
    for (const unit of this.sharding.units) {
      if (unit.resident) continue;
      for (const seg of unit.segments) mine.set(seg.slot.fqn, { start: seg.start, end: seg.end });
    }
    const checkpoint = await loadShardedCheckpoint(path, {
      device: this.rootDevice,
      part: (name) => {
        const fqn = name.startsWith(MODEL_PREFIX) ? name.slice(MODEL_PREFIX.length) : stateParam(name, mine);
        return fqn === undefined ? undefined : mine.get(fqn);
      },
    });
    this.localSegments = true;
    return checkpoint;
  }

  /**
   * [Note: local segments] After `loadCheckpoint` read a sharded checkpoint, the sharded
   * parameters' values (and optimizer state) are this rank's segments already, not whole tensors.
   */
  private localSegments = false;

  /** The full module state on rank 0, gathered one unit at a time; other ranks return nothing. Sharded: this rank's slices. */
  override async moduleStateDict(module: Module): Promise<Record<string, Tensor>> {
    if (this.sharded) {
      const out: Record<string, Tensor> = {};
      for (const unit of this.sharding.units) {
        unit.layout.slots.forEach((slot, i) => (out[slot.fqn] = unit.resident ? unit.optimParams[i] : unit.localSegment(i)));
      }
      for (const [name, b] of module.namedBuffers()) out[name] = b;
      return out;
    }
    const out: Record<string, Tensor> = {};
    for (const unit of this.sharding.units) {
      const full = unit.fullValues();
      unit.layout.slots.forEach((slot, i) => {
        if (this.isGlobalZero) out[slot.fqn] = full[i];
        else full[i].dispose();
      });
    }
    if (this.isGlobalZero) for (const [name, b] of module.namedBuffers()) out[name] = b;
    return out;
  }

  /** Takes this rank's slices out of a full state (saved at any world size, by any strategy). */
  override async loadModuleStateDict(module: Module, state: Record<string, Tensor>): Promise<void> {
    const missing = this.sharding.units.flatMap((u) => u.layout.slots.map((s) => s.fqn)).filter((n) => !(n in state));
    if (missing.length > 0) throw new Error(`${this.name}: the state has no ${missing.slice(0, 3).join(", ")}${missing.length > 3 ? ", ..." : ""}`);
    for (const unit of this.sharding.units) {
      const values = unit.layout.slots.map((s) => state[s.fqn]);
      if (this.localSegments && !unit.resident) unit.loadSegments(values);
      else unit.loadFull(values);
    }
    for (const [name, b] of module.namedBuffers()) if (state[name]) noGrad(() => b.copy_(state[name]));
    this.sharding.afterStep();
  }

  async optimizerStateDict(optimizer: Optimizer): Promise<OptimizerState> {
    // Sharded: each rank's segments as they are, described as pieces when saved.
    if (this.sharded) return namedOptimizerState(optimizer, (p) => this.fqnOf(p));
    return namedOptimizerState(optimizer, (p) => this.fqnOf(p), (entries) => this.wholeStates(entries));
  }

  async loadOptimizerStateDict(optimizer: Optimizer, state: OptimizerState): Promise<void> {
    const local = this.localSegments;
    this.localSegments = false;
    // Offloaded, the loaded state is shared memory like the state the step makes (the CPU optimizer's threads update it).
    this.sharding.onHost(() =>
      loadNamedOptimizerState(optimizer, (p) => this.fqnOf(p), state, (p, value) => {
        const at = this.segmentNames.get(p)!;
        return local && !at.unit.resident ? value : at.unit.sliceOf(at.index, value);
      }),
    );
  }

  private fqnOf(p: Tensor): string | undefined {
    const at = this.segmentNames.get(p);
    return at ? at.unit.layout.slots[at.index].fqn : undefined;
  }

  /**
   * Each segment's state made whole: per unit and state name, the segments are laid into the
   * unit's slice and gathered over its shard group once (every rank issues the same gathers in
   * the same order: units in order, state names sorted).
   */
  private wholeStates(entries: readonly StateEntry[]): Tensor[] {
    const out: Tensor[] = new Array(entries.length);
    const groups = new Map<FlatUnit, Map<string, number[]>>();
    entries.forEach((e, i) => {
      const at = this.segmentNames.get(e.param)!;
      const byKey = groups.get(at.unit) ?? new Map<string, number[]>();
      groups.set(at.unit, byKey);
      byKey.set(e.stateName, [...(byKey.get(e.stateName) ?? []), i]);
    });
    for (const unit of this.sharding.units) {
      const byKey = groups.get(unit);
      if (!byKey) continue;
      for (const key of [...byKey.keys()].sort()) {
        const indices = byKey.get(key)!;
        const whole = unit.gatherSegments(indices.map((i) => ({ index: this.segmentNames.get(entries[i].param)!.index, tensor: entries[i].tensor })));
        indices.forEach((i, k) => (out[i] = whole[k]));
      }
    }
    return out;
  }

  // ---- memory ----------------------------------------------------------------------------------

  /** Parameters, gradients and optimizer state divided over the shard group; the units being computed gathered beside them. */
  override estimateMemory(input: MemoryEstimateInput): MemoryEstimate {
    const o = this.options;
    const world = input.worldSize ?? this.worldSize;
    const shards = o.shardingStrategy === "NO_SHARD" ? 1 : o.shardingStrategy === "HYBRID_SHARD" ? (o.deviceMesh?.[1] ?? world) : world;
    const marked = markedModules(input.module);
    const units = marked.length > 0 ? marked : o.autoWrapPolicy === null ? moduleListElements(input.module) : selectModules(input.module, o.autoWrapPolicy);
    const unitOptions = fullyShardOptions(input.module);
    const placement = this.offloadPlacement(units, unitOptions);
    const engine = this.engineOptions(placement);
    const k = o.reshardAfterForward;
    const own = [...unitOptions].flatMap(([path, u]) => (u.reshardAfterForward === null ? [] : [[path, u.reshardAfterForward] as const]));
    return estimateShardedMemory(this.name, input, {
      shards,
      units,
      prefetch: engine.prefetch,
      reshardAfterForward: typeof k === "number" ? k : engine.reshardAfterForward,
      unitReshardAfterForward: new Map(own),
      keepGathered: false,
      offload: placement.offload,
      keep: placement.keep,
      deviceStepShare: engine.deviceStepShare,
      uploadsAhead: this.offloadedUnitsCast(units, unitOptions),
      computeDtypes: this.computeDtypes(units, unitOptions),
      alone: world === 1,
      checkpointed: o.activationCheckpointingPolicy === null ? [] : selectModules(input.module, o.activationCheckpointingPolicy),
      notes: [`${o.shardingStrategy} over ${shards} shard(s); ${units.length} wrapped unit(s) gathered while they compute, ${engine.prefetch} prefetched; the root unit gathered for the whole step`],
    });
  }

  protected override releaseModule(): void {
    this.engine?.remove();
    this.engine = null;
    this.undoCheckpointing?.();
    this.undoCheckpointing = null;
    this.segmentNames.clear();
  }
}

/** The parameter an optimizer-state tensor key ("optimizer.state.<fqn>.<name>") belongs to, if it is one of `slots`. */
function stateParam(key: string, slots: ReadonlyMap<string, unknown>): string | undefined {
  const prefix = `${OPTIMIZER_PREFIX}state.`;
  if (!key.startsWith(prefix)) return undefined;
  const rest = key.slice(prefix.length);
  const fqn = rest.slice(0, rest.lastIndexOf("."));
  return slots.has(fqn) ? fqn : undefined;
}

/** Materialises the parameters and buffers of the unit at `path`: its own, not those of units nested in it. */
function materializeUnit(root: Module, path: string, wrapped: readonly string[], device: string): void {
  const module = path === "" ? root : root.getSubmodule(path);
  const inner = wrapped.filter((p) => p !== path && (path === "" || p.startsWith(`${path}.`)));
  for (const [name, m] of module.namedModules()) {
    const full = path === "" ? name : name === "" ? path : `${path}.${name}`;
    if (inner.some((p) => full === p || full.startsWith(`${p}.`))) continue;
    materializeModule(m, device, { recurse: false });
  }
}
