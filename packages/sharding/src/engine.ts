/**
 * The sharding engine FSDP and ZeRO-3 share (DESIGN.md decisions 6, 14 and 15): it turns a
 * module into sharded units and drives them from hooks.
 *
 * - forward: a unit's pre-forward hook gathers it (waiting orders, it does not poll: on CPU the
 *   host blocks until the data is in place, on CUDA the compute stream waits on an event) and
 *   starts gathering the next `prefetch` units; its post-forward hook frees it again under
 *   FULL_SHARD, unless backward is running (a recomputation for activation checkpointing).
 * - backward: a unit's backward pre-hook gathers it again (prefetching the units before it) and
 *   gives its parameters gradient views into a flat buffer; once every parameter's gradient has
 *   arrived, the buffer is reduce-scattered into this rank's gradient slice and the unit freed.
 * - the root unit (parameters outside every wrapped unit: embeddings, the head) stays gathered for
 *   the whole step and is reduced once, when the optimizer steps: its gradients accumulate in one
 *   buffer over the micro-batches of an accumulation window.
 * - the step: the optimizer holds each parameter's local segment; replicas (HYBRID_SHARD,
 *   NO_SHARD) average their slices first.
 */
import type { Module, Optimizer, RemovableHandle } from "@fulgur/nn";
import { DownloadQueue } from "./downloadQueue";
import { type AdamWRoute, type Tensor, memoryStats, routeAdamW, sharedHostMemory, stopCpuOptimizerThreads } from "@fulgur/tensor";
import { DeviceStreamedStep } from "./deviceStep";
import { StepBesideBackward, fusedAdamWProblem } from "./stepBesideBackward";
import { HostScratch } from "./hostScratch";
import type { EngineOptions, UnitOptions } from "./api";
import { FlatUnit, type UnitGroups } from "./flatUnit";
import { layoutUnit, owningUnit } from "./layout";
import { NvmeTier } from "./nvme/nvmeTier";
import { stepInPieces } from "./nvme/piecewiseStep";

/** Where a unit's parameters and its optimizer state live (see [Note: units kept on the device] in api.ts). */
export interface UnitPlacement {
  /** The unit's module path ("" for the root unit). */
  readonly name: string;
  /** "device": computed from without an upload (a slice on the device, or a gathered copy kept there). */
  readonly parameters: "device" | "host" | "nvme";
  /** Where the master slice, the gradient slice and the optimizer state are. */
  readonly optimizerState: "device" | "host" | "nvme";
}

/** A unit to build: its module's path in the root ("" for the root unit) and its parameters. */
export interface UnitPlan {
  readonly path: string;
  readonly params: readonly { readonly fqn: string; readonly tensor: Tensor }[];
  /** This unit's own settings (FSDP2's per-call `fully_shard` options); what it leaves out is the engine's. */
  readonly options?: UnitOptions;
}

/**
 * Splits a module's parameters into units: each wrapped path takes the parameters under it that
 * no deeper wrapped path takes; the root unit takes the rest. Units come in registration order,
 * the root last.
 */
export function planUnits(root: Module, wrapped: readonly string[]): UnitPlan[] {
  const paths = [...new Set(wrapped.filter((p) => p !== ""))];
  const byPath = new Map<string, { fqn: string; tensor: Tensor }[]>([...paths, ""].map((p) => [p, []]));
  for (const [fqn, tensor] of root.namedParameters()) byPath.get(owningUnit(fqn, paths))!.push({ fqn, tensor });
  const order = root.namedModules().map(([name]) => name);
  const ordered = paths.slice().sort((a, b) => order.indexOf(a) - order.indexOf(b));
  return [...ordered, ""].map((path) => ({ path, params: byPath.get(path)! })).filter((u) => u.params.length > 0);
}

/** The longest dotted prefix all paths share ("" when none). */
function commonAncestor(paths: readonly string[]): string {
  if (paths.length === 0) return "";
  let parts = paths[0].split(".");
  for (const p of paths.slice(1)) {
    const other = p.split(".");
    let k = 0;
    while (k < parts.length && k < other.length && parts[k] === other[k]) k++;
    parts = parts.slice(0, k);
  }
  return parts.join(".");
}

/**
 * FULGUR_TRACE_MEMORY=1: a line on stderr at each unit's forward, backward and reduction with the
 * bytes live on the device and the peak so far, to see where a step's memory goes unit by unit.
 */
const TRACE = process.env.FULGUR_TRACE_MEMORY === "1";
/**
 * FULGUR_TRACE_STEP=1: a line on stderr per optimizer step with the host's time waiting for the
 * step's gradients (the last reductions, and under offload their copies to the host) and in the
 * optimizer step itself: the per-step breakdown of an offloaded run.
 */
const TRACE_STEP = process.env.FULGUR_TRACE_STEP === "1";
function trace(event: string, unit: FlatUnit, device: string): void {
  if (!TRACE) return;
  const { liveBytes, peakBytes } = memoryStats(device);
  process.stderr.write(`memtrace ${event} ${unit.name} live ${liveBytes} peak ${peakBytes}\n`);
}

export class ShardingEngine {
  readonly units: FlatUnit[] = [];
  private readonly wrapped: FlatUnit[] = [];
  private rootUnit: FlatUnit | null = null;
  /** Wrapped units in the order their forwards ran, learnt in the first step (registration order until then). */
  private forwardOrder: FlatUnit[] = [];
  private recorded: FlatUnit[] | null = [];
  private inBackward = false;
  /** The unit reduced last in this backward, whose reduced gradients are added into its slice when the next one is ([Note: reduced into the slice] in flatUnit.ts). */
  private lastReduced: FlatUnit | null = null;
  /** FULGUR_TRACE_STEP=1: when the step's gradients were being finished (host clock). */
  private stepTimes: { gradientsFrom: number; gradientsTo: number } | null = null;
  /** Offloaded gradients on their way to the host (downloadQueue.ts). */
  private readonly downloads = new DownloadQueue<FlatUnit>(() => this.units);
  private readonly handles: RemovableHandle[] = [];
  /** Whether each unit frees its gathered parameters after forward: the engine's choice unless the unit made its own. */
  private readonly reshardsAfterForward = new Map<FlatUnit, boolean>();
  /** The disk tier (NVMe offload), or null: this rank's swap directory lives as long as the engine. */
  readonly nvme: NvmeTier | null;
  /** The share of the offloaded step updated on the device ([Note: the step streamed through the device]), or null. */
  readonly streamedStep: DeviceStreamedStep | null;
  /** The optimizer's parameters of the units the step updates on the device (chosen in ready()). */
  private readonly streamedSegments = new Set<Tensor>();
  /** Offloaded units updated beside backward ([Note: the step beside backward]), or null. */
  readonly besideBackward: StepBesideBackward | null;
  /** FULGUR_TRACE_STEP: units updated beside backward before this step. */
  private besideBefore = 0;
  /** Offloaded to a GPU's host: pinned buffers for later micro-batches' gradients ([Note: later micro-batches added beside backward] in flatUnit.ts). */
  private readonly scratch: HostScratch | null;

  constructor(
    readonly root: Module,
    readonly groups: UnitGroups,
    readonly options: EngineOptions,
    readonly device: string,
  ) {
    const nvme = options.nvme;
    if (nvme && !options.offload) throw new RangeError("sharding engine: NVMe offload goes through the host: set offload too");
    this.nvme = nvme ? new NvmeTier(nvme, groups.shard.ranks[groups.shard.rank] ?? groups.shard.rank) : null;
    const share = options.deviceStepShare ?? 0;
    if (share > 0 && !options.offload) throw new RangeError("sharding engine: deviceStepShare streams offloaded state through the device: set offload too");
    // The share is taken by whole units (chosen in ready()), each streamed whole.
    this.streamedStep = share > 0 ? new DeviceStreamedStep(device, 1, (p) => this.streamedSegments.has(p)) : null;
    if (options.stepBesideBackward && !options.offload) throw new RangeError("sharding engine: stepBesideBackward updates offloaded units on the CPU's threads: set offload too");
    this.besideBackward = options.stepBesideBackward ? new StepBesideBackward((fn) => this.onHost(fn)) : null;
    this.scratch = options.offload && device !== "cpu" ? new HostScratch(device) : null;
  }

  /**
   * The optimizer the strategy steps (its setupOptimizer): with stepBesideBackward, the one whose
   * updates run beside backward, refused with why when it cannot.
   */
  attachOptimizer(optimizer: Optimizer): void {
    this.besideBackward?.attach(optimizer);
  }

  /**
   * Chooses the units whose step goes through the device: offloaded units whose state stays in host
   * memory, in order, until they hold the share of those units' elements (at least one unit). Their
   * gradient slices stay on the device ([Note: gradients beside the streamed step] in deviceStep.ts).
   */
  private chooseStreamedUnits(): void {
    const share = this.options.deviceStepShare ?? 0;
    if (share <= 0) return;
    const candidates = this.units.filter((u) => u.onHost && !u.onDisk && !u.resident);
    const total = candidates.reduce((n, u) => n + u.layout.shardNumel, 0);
    let taken = 0;
    for (const u of candidates) {
      if (taken > 0 && taken >= share * total) break;
      u.streamed = true;
      u.gradsOnDevice = true;
      taken += u.layout.shardNumel;
      for (const p of u.optimParams) this.streamedSegments.add(p);
    }
  }

  /**
   * Shards one planned unit: its full parameters are copied into this rank's slice and freed.
   * Called unit by unit, so a model materialised one unit at a time never exists whole.
   */
  addUnit(plan: UnitPlan): FlatUnit {
    const shards = this.groups.shard.size;
    const layout = layoutUnit(
      plan.params.map((p) => ({ fqn: p.fqn, shape: p.tensor.shape })),
      shards,
    );
    const master = plan.params[0].tensor.dtype;
    const mixedPrecision = plan.options?.mixedPrecision ?? this.options.mixedPrecision;
    const computeDtype = mixedPrecision.paramDtype ?? master;
    const reduceDtype = mixedPrecision.reduceDtype ?? computeDtype;
    // [Note: units kept on the device] in api.ts.
    const keep = this.options.keep;
    const onHost = this.options.offload && !(keep?.optimizerState.includes(plan.path) ?? false);
    const masterDevice = onHost ? "cpu" : this.device;
    const groups = plan.options?.groups ?? this.groups;
    const unit = new FlatUnit(plan.path, this.root, layout, groups, computeDtype, reduceDtype, this.device, masterDevice, plan.params.map((p) => p.tensor));
    unit.onHost = onHost;
    if (onHost) unit.scratch = this.scratch;
    unit.onDisk = this.nvme !== null && onHost && !(keep?.host?.includes(plan.path) ?? false);
    // The root unit is gathered for the whole step anyway (see the header).
    unit.keptGathered = plan.path === "" || (this.options.keepGathered ?? false) || (keep?.parameters.includes(plan.path) ?? false);
    this.reshardsAfterForward.set(unit, plan.options?.reshardAfterForward ?? this.options.reshardAfterForward);
    for (const p of plan.params) p.tensor.dispose();
    // NVMe parameter offload: the slice lives on disk from here on, read in for each use.
    if (this.nvme && this.options.nvme!.parameters && unit.onDisk && !unit.resident) {
      unit.masterTier = this.nvme;
      this.nvme.evict([unit.master], true);
    } else {
      unit.pinHostSlices();
      unit.keepHostCopy();
    }
    unit.onUnshardedParam = (p, i) => {
      p.registerPostAccumulateGradHook(() => this.onGradient(unit, i));
    };
    this.units.push(unit);
    if (plan.path === "") this.rootUnit = unit;
    else {
      this.wrapped.push(unit);
      this.forwardOrder.push(unit);
      this.hook(unit);
    }
    return unit;
  }

  /**
   * Call once every unit is added. The root unit is gathered for the first step, and the modules
   * that own its parameters (and their nearest common ancestor) put its full-shape parameters in
   * place before they compute; between steps the module shows the optimizer its segments.
   */
  ready(): void {
    this.chooseStreamedUnits();
    this.gatherKept();
    const root = this.rootUnit;
    if (!root || root.resident) return;
    root.gather();
    const owners = new Set(root.layout.slots.map((s) => s.fqn.split(".").slice(0, -1).join(".")));
    for (const path of [...owners, commonAncestor([...owners])]) {
      if (path === "") continue;
      this.handles.push(this.root.getSubmodule(path).registerForwardPreHook(() => root.activate()));
    }
  }

  private hook(unit: FlatUnit): void {
    const module = this.root.getSubmodule(unit.name);
    this.handles.push(
      module.registerForwardPreHook(() => this.preForward(unit)),
      module.registerForwardHook(() => this.postForward(unit)),
      module.registerBackwardPreHook(() => this.preBackward(unit)),
    );
  }

  private preForward(unit: FlatUnit): void {
    trace("preForward", unit, this.device);
    if (!this.inBackward && this.besideBackward?.pending) {
      this.besideBackward.settle();
      throw new Error(`offloadStepInBackward: a forward ran between backward and the optimizer step, but units were already updated beside that backward (unit "${unit.name}" would compute with half-stepped values); step the optimizer first, or leave offloadStepInBackward off`);
    }
    unit.activate();
    if (this.recorded && !this.inBackward && !this.recorded.includes(unit)) this.recorded.push(unit);
    if (!this.inBackward) this.prefetch(unit, 1);
  }

  private postForward(unit: FlatUnit): void {
    if (!this.reshardsAfterForward.get(unit) || unit.keptGathered || this.inBackward) return;
    unit.reshardToPostForwardGroup();
    // A resident unit has nothing to free but its autocast copies ([Note: autocast copies reshard too]).
    if (unit.resident) unit.releaseCastCopies();
  }

  /**
   * [Note: casts ahead of backward] A unit that freed its autocast copies after forward casts them
   * again before its backward. For a resident unit (its parameters always there: a rank alone, or
   * NO_SHARD) that cast is issued one unit ahead, in the pre-backward hook of the unit after it in
   * forward order, and may run beside that unit's backward (`Backend.copyBeside`: on CUDA a second
   * stream; a cast is bound by memory bandwidth, a backward by its products). Issued in its own
   * pre-backward hook instead, it held compute for the whole cast: about 3% of a 1b step at world 1.
   * The price is one more unit's copies during backward. A unit that gathers must wait for its
   * gather before casting, so it casts in its own hook as before.
   */
  private preBackward(unit: FlatUnit): void {
    trace("preBackward", unit, this.device);
    unit.activate();
    unit.restoreCastCopies();
    unit.prepareGradients();
    this.prefetch(unit, -1);
  }

  /**
   * Starts gathering the units after (direction 1) or before (-1) `unit` in forward order, and the
   * upload of the one after those ([Note: upload one unit ahead] in flatUnit.ts): issued here, ahead
   * of `unit`'s kernels, it runs beside them, and the cast that waits for it is queued only by the
   * next unit's prefetch. In backward, the next resident unit's autocast copies are cast again here
   * too ([Note: casts ahead of backward]).
   */
  private prefetch(unit: FlatUnit, direction: 1 | -1): void {
    const order = this.forwardOrder;
    const at = order.indexOf(unit);
    const depth = this.options.prefetch;
    for (let k = 1; k <= depth; k++) order[at + direction * k]?.startGather();
    order[at + direction * (depth + 1)]?.startUpload();
    const next = order[at + direction];
    if (direction === -1 && next?.resident) next.restoreCastCopies(true);
  }

  private onGradient(unit: FlatUnit, slotIndex: number): void {
    unit.gradsSeen.add(slotIndex);
    if (unit !== this.rootUnit && unit.gradientsComplete) {
      trace("reduce", unit, this.device);
      unit.reduceGradients();
      if (!unit.keptGathered) unit.reshard();
      if (this.options.offload) this.downloads.reduced(unit);
      // One unit late, as the downloads: its reduction has had this unit's backward to finish.
      this.lastReduced?.foldReductions();
      this.lastReduced = unit;
      this.besideBackward?.reduced(unit);
    }
  }

  /** False inside `withoutStep`: no optimizer step follows the backward passes run there. */
  private stepFollows = true;

  /**
   * Runs `fn` inside an accumulation window (a strategy's `noBackwardSync`): no optimizer step
   * follows its backward passes, so nothing is updated beside them ([Note: the step beside
   * backward]). Reductions still run on every micro-batch: a sharded gradient is kept reduced.
   */
  withoutStep<T>(fn: () => T): T {
    const before = this.stepFollows;
    this.stepFollows = false;
    try {
      return fn();
    } finally {
      this.stepFollows = before;
    }
  }

  /**
   * Runs a backward pass (`run`) between `beginBackward` and `endBackward`. `stepFollows`: false
   * inside an accumulation window (by default: outside `withoutStep`).
   */
  runBackward(run: () => void, stepFollows = this.stepFollows): void {
    this.beginBackward(stepFollows);
    try {
      run();
    } finally {
      this.endBackward();
    }
  }

  /**
   * Before a backward pass: gradient views for the units that are gathered for the whole step.
   * `stepFollows`: false inside an accumulation window (no optimizer step after this backward),
   * where nothing is updated beside it ([Note: the step beside backward]).
   */
  beginBackward(stepFollows = true): void {
    this.besideBackward?.begin(stepFollows);
    this.inBackward = true;
    for (const unit of this.units) if (unit.resident || unit === this.rootUnit) unit.prepareGradients();
  }

  /** Units kept gathered (ZeRO 1 and 2, units whose parameters are kept) are gathered before the first step, like the root unit. */
  private gatherKept(): void {
    const kept = this.wrapped.filter((u) => u.keptGathered);
    for (const unit of kept) unit.startGather();
    for (const unit of kept) unit.gather();
  }

  endBackward(): void {
    this.inBackward = false;
    this.besideBackward?.end();
    if (this.recorded && this.recorded.length === this.wrapped.length) {
      this.forwardOrder = this.recorded;
      this.recorded = null;
    }
  }

  /**
   * Before the optimizer step: every unit's gradients reduced into its slice, replicas averaged,
   * and the optimizer's parameters given their gradient views. Returns those gradients.
   */
  finishGradients(): Tensor[] {
    const start = TRACE_STEP ? performance.now() : 0;
    this.lastReduced = null;
    for (const unit of this.units) {
      unit.reduceGradients();
      if (unit !== this.rootUnit && !unit.keptGathered) unit.reshard();
    }
    this.downloads.flush();
    for (const unit of this.units) unit.finishReductions();
    const replicas = this.units.map((u) => u.averageReplicas());
    for (const w of replicas) w?.synchronize();
    for (const unit of this.units) unit.attachStepGradients();
    if (TRACE_STEP) this.stepTimes = { gradientsFrom: start, gradientsTo: performance.now() };
    return this.optimizerParams().flatMap((p) => (p.grad ? [p.grad] : []));
  }

  /** The parameters the optimizer steps, in unit order. */
  optimizerParams(): Tensor[] {
    return this.units.flatMap((u) => [...u.optimParams]);
  }

  /**
   * Runs what makes optimizer state (the step, which awaits its collectives; loading a state).
   * Offloaded, that state lives in shared memory like the slices, so the CPU optimizer's worker
   * threads update all of it in place.
   */
  onHost<T>(fn: () => T): T {
    return this.options.offload ? sharedHostMemory(fn) : fn();
  }

  /**
   * Runs the optimizer step (`run`: the precision's sequence, which calls `optimizer.step()` once).
   * Offloaded to NVMe, that call steps piece by piece, reading each piece's state (and slices) from
   * disk while the piece before it is updated ([Note: the piecewise step] in nvme/piecewiseStep.ts).
   */
  async step<T>(optimizer: Optimizer, run: () => Promise<T>, clips = false): Promise<T> {
    const nvme = this.nvme;
    const streamed = this.streamedStep;
    const beside = this.besideBackward;
    if (clips) beside?.refuseClipping();
    // Gradients kept on the device are read there only by the fused AdamW the route streams; any
    // other optimizer gets them in host memory, as without the share.
    if (streamed && fusedAdamWProblem(optimizer) !== null) for (const u of this.units) u.bringGradientsHome();
    const route = this.stepRoute();
    const routed = route ? () => routeAdamW(route, run) : run;
    try {
      const result = await (nvme ? this.onHost(() => stepInPieces(optimizer, this.units, nvme, this.options.nvme!.subGroupSize, routed)) : this.onHost(routed));
      beside?.checkAllTaken();
      return result;
    } catch (err) {
      // Updates still under way write into the state: they end before the error travels.
      beside?.settle();
      throw err;
    }
  }

  /**
   * Where the step's fused AdamW calls run: what was updated beside backward is only waited for;
   * of the rest, the share streamed through the device goes there ([Note: the step streamed
   * through the device]), the others to the backend. Null when neither applies.
   */
  private stepRoute(): AdamWRoute | null {
    const streamed = this.streamedStep;
    const beside = this.besideBackward;
    if (!streamed && !beside) return null;
    return (call, onBackend) => {
      const rest = beside ? beside.split(call) : call;
      try {
        if (rest === call) return streamed ? streamed.route(call, onBackend) : false;
        if (rest && !streamed?.route(rest, onBackend)) onBackend(rest);
        return true;
      } finally {
        // The threads updating the taken parameters ran beside the rest; the step ends with them.
        beside?.finishTaken();
      }
    };
  }

  /**
   * Runs `fn` with every optimizer state in memory (a checkpoint reads or replaces it): read from
   * disk first and put back after, written again when `changed` (a load made new state tensors).
   */
  async withOptimizerState<T>(optimizer: Optimizer, changed: boolean, fn: () => Promise<T> | T): Promise<T> {
    const nvme = this.nvme;
    if (!nvme || !this.options.nvme!.optimizerState) {
      return this.onHost(async () => {
        const result = await fn();
        if (changed) this.streamedStep?.unpinAll();
        return result;
      });
    }
    // Units kept on the device or in host memory keep their state there: only the others' goes to disk.
    const offloaded = new Set(this.units.filter((u) => u.onDisk).flatMap((u) => [...u.optimParams]));
    const stateTensors = (): Tensor[] =>
      [...optimizer.state.entries()].flatMap(([p, s]) => (offloaded.has(p) ? Object.values(s).filter((v): v is Tensor => typeof v !== "number") : []));
    const before = stateTensors();
    nvme.fetch(before);
    const result = await this.onHost(async () => fn());
    // A load made new state tensors: the old ones' pages are unpinned (the new ones are pinned at the next step).
    if (changed) this.streamedStep?.unpinAll();
    const after = stateTensors();
    if (changed) nvme.forget(before.filter((t) => !after.includes(t)));
    nvme.evict(after, changed);
    return result;
  }

  /** After the optimizer step (or a load): slices changed, so the root unit is gathered again. */
  afterStep(): void {
    if (this.stepTimes) {
      const { gradientsFrom, gradientsTo } = this.stepTimes;
      const streamed = this.streamedStep;
      // With a share streamed through the device: how the step split (the device's pieces queued while the CPU's threads ran their share, the wait for that share after it, the wait for the device after that).
      const t = streamed?.takeTimings();
      const split = t ? `; streamed step: queue ${t.queueMs.toFixed(1)} ms (the CPU's share running), then waited ${t.cpuMs.toFixed(1)} ms for the CPU's share and ${t.waitMs.toFixed(1)} ms for the device's` : "";
      const beside = this.besideBackward;
      const early = beside ? `; ${beside.unitsStepped - this.besideBefore} unit(s) updated beside backward` : "";
      if (beside) this.besideBefore = beside.unitsStepped;
      process.stderr.write(`steptrace gradients ${(gradientsTo - gradientsFrom).toFixed(1)} ms (the last reductions and the offloaded gradients' copies waited for), optimizer ${(performance.now() - gradientsTo).toFixed(1)} ms (clipping and the step)${split}${early}\n`);
      this.stepTimes = null;
    }
    for (const unit of this.units) unit.stepped();
    // Kept units are gathered again at once (all started before any is waited for, so the
    // gathers overlap each other); otherwise only the root unit is.
    const again = this.units.filter((u) => !u.resident && (u.keptGathered || u === this.rootUnit));
    for (const unit of again) unit.startGather();
    for (const unit of again) {
      unit.gather();
      unit.deactivate();
    }
  }

  /** For a strategy's start-up line: how many units the step updates on the device, or "" when none. */
  describeOffloadedStep(): string {
    const n = this.units.filter((u) => u.streamed).length;
    const streamed = n === 0 ? "" : `; ${n} of ${this.units.length} unit(s) stepped on the device, their gradients kept there (offloadStepShare)`;
    return streamed + (this.besideBackward ? "; offloaded units in host memory updated beside backward when a step follows (offloadStepInBackward)" : "");
  }

  /** Where each unit's parameters and optimizer state live, in unit order. */
  placement(): UnitPlacement[] {
    const stateTier = this.nvme && this.options.nvme!.optimizerState ? "nvme" : "host";
    return this.units.map((u) => ({
      name: u.name,
      // Parameters computed from the device without an upload: a slice there, or a gathered copy kept there.
      parameters: !u.onHost || u.resident || u.keptGathered ? "device" : u.masterTier ? "nvme" : "host",
      optimizerState: u.onHost ? (u.onDisk ? stateTier : "host") : "device",
    }));
  }

  /**
   * Bytes held now on the device and in host memory, by where the engine keeps them: every unit's
   * slices, gathered buffers and the optimizer state of its parameters (state on disk counts in
   * neither). On the CPU backend both are host memory; the split is the engine's placement.
   */
  heldBytes(optimizer: Optimizer | null): { readonly device: number; readonly host: number } {
    let device = 0;
    let host = 0;
    for (const u of this.units) {
      const held = u.heldBytes();
      let state = 0;
      for (const p of u.optimParams) {
        for (const v of Object.values(optimizer?.state.get(p) ?? {})) if (typeof v !== "number" && v.storageRef.hasMemory) state += v.storageRef.bytes;
      }
      device += held.gathered + held.deviceGradients;
      if (u.onHost) host += held.slices + state;
      else device += held.slices + state;
    }
    return { device, host: host + (this.scratch?.bytes ?? 0) };
  }

  remove(): void {
    this.besideBackward?.settle();
    for (const h of this.handles.splice(0)) h.remove();
    for (const unit of this.units) unit.dispose();
    // The threads only offloaded steps use go with the job (they are started again if needed).
    if (this.options.offload) stopCpuOptimizerThreads();
    this.streamedStep?.unpinAll();
    this.scratch?.dispose();
    // This rank's swap directory goes with the engine (it was made for it).
    this.nvme?.dispose();
  }
}
