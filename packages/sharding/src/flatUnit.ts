/**
 * One sharded unit (DESIGN.md decision 15; FSDP2's `FSDPParamGroup`): the parameters of a module
 * (a transformer block, or what the wrap policy chose) flattened into one buffer, of which this
 * rank keeps its contiguous slice as fp32 master weights. Two ways a unit presents its parameters
 * to the module:
 *
 * - resident (one shard, no cast): the module's parameters are views into the master slice, with
 *   their full shapes, and their gradients views into the gradient slice. Nothing is gathered or
 *   scattered; this is FSDP at world 1 and NO_SHARD, and costs what single-device training costs.
 * - sharded: between steps the module holds each parameter's local segment (a 1-D view of the
 *   master slice, the object the optimizer steps); for compute, the unit gathers the flat buffer
 *   and the module holds full-shape views into it, whose gradients are views into a flat gradient
 *   buffer that is reduce-scattered into the gradient slice once the unit's backward is done.
 */
import type { ProcessGroup, Work } from "@fulgur/core";
import { type Module, parameter } from "@fulgur/nn";
import { COMPLETED_WORK } from "@fulgur/strategy-kit";
import { type DType, type HostArray, type PendingRead, type PendingWork, type Tensor, addBeside, annotateOutOfMemory, dropAutocastCopy, getBackend, isLowPrecisionCopyCurrent, keepLowPrecisionCopy, noGrad, releaseAutocastCopy, restoreAutocastCopy, scope, sharedHostMemory, zeros } from "@fulgur/tensor";
import { type Segment, type UnitLayout, segmentsOf } from "./layout";
import type { NvmeTier } from "./nvme/nvmeTier";
import type { HostScratch } from "./hostScratch";
import { pinHostTensor } from "./pinHost";
import { releaseMemory, restoreMemory } from "./storageMemory";

/**
 * What a unit is doing (FSDP2's TrainingState, for this unit's parameters). "partial": resharded
 * after forward to the post-forward group (FSDP2's `reshard_after_forward: int`), which gathers it
 * for backward without the other groups.
 */
export type UnitState = "sharded" | "gathering" | "gathered" | "partial";

export interface UnitGroups {
  /** The ranks this unit is sharded over (the whole world for FULL_SHARD). */
  readonly shard: ProcessGroup;
  /** The ranks holding the same shard (HYBRID_SHARD across nodes, NO_SHARD across the world), or null. */
  readonly replicate: ProcessGroup | null;
  /**
   * The consecutive ranks of the shard group that a unit stays sharded over between its forward and
   * its backward (FSDP2's `reshard_after_forward: int`, e.g. the GPUs of one node), or null.
   */
  readonly postForward?: ProcessGroup | null;
}

export class FlatUnit {
  readonly segments: readonly Segment[];
  /** This rank's slice of the flat parameters, in the master dtype. */
  readonly master: Tensor;
  /** This rank's slice of the flat gradients (accumulated over micro-batches), or null before the first. */
  gradShard: Tensor | null = null;
  /** Whether `gradShard` holds this step's gradients (false after an optimizer step: the next result overwrites). */
  private gradFresh = false;
  /** The segment parameters the optimizer steps (sharded layout) or the full-shape views (resident). */
  readonly optimParams: readonly Tensor[];
  /** Full-shape views into the gathered buffer (sharded layout), made once and re-pointed never. */
  private unsharded: Tensor[] = [];
  private gathered: Tensor | null = null;
  /** This rank's 1/k of the gathered buffer between forward and backward (state "partial"). */
  private partial: Tensor | null = null;
  private gatherSource: Tensor | null = null;
  /**
   * The master slice already on the device, uploaded ahead of its gather ([Note: upload one unit
   * ahead]), or null. Consumed (cast, then freed) by the next gather.
   */
  private uploaded: Tensor | null = null;
  /**
   * The master slice in the compute dtype, in host memory beside it, uploaded in its place
   * ([Note: uploads in the compute dtype]), or null.
   */
  private hostCopy: Tensor | null = null;
  private gatherWork: Work | null = null;
  /** The flat gradient buffer of the current backward (sharded layout). */
  private flatGrad: Tensor | null = null;
  private readonly pendingReductions: { work: Work; out: Tensor }[] = [];
  /**
   * Offloaded gradients on their way down into the pinned gradient slice, each with the device
   * slice it reads (kept allocated until the copy is done: freeing it would make compute wait).
   */
  private readonly downloads: { read: PendingRead; out: Tensor; into: Tensor | null }[] = [];
  /** Later micro-batches' gradients down in scratch buffers, waiting to be added into the slice, oldest first. */
  private readonly landedSums: Tensor[] = [];
  /** The add under way into the gradient slice (one at a time: two would race on its elements), or null. */
  private adding: { work: PendingWork; from: Tensor } | null = null;
  /**
   * Pinned host buffers for later micro-batches' gradients on their way down ([Note: later
   * micro-batches added beside backward]); set by the engine for offload to a GPU's host, else null.
   */
  scratch: HostScratch | null = null;
  /** Host arrays this unit page-locked with the device's backend (unpinned in dispose). */
  private readonly pinned: HostArray[] = [];
  state: UnitState = "sharded";
  readonly resident: boolean;
  /** Parameters whose gradient arrived in the current backward (by slot index). */
  readonly gradsSeen = new Set<number>();
  /**
   * The disk tier holding the master slice between its uses (NVMe parameter offload), or null.
   * Never for a resident unit: its module computes with views of the master slice directly.
   */
  masterTier: NvmeTier | null = null;
  /**
   * Whether the master slice, gradient slice and optimizer state live in host memory (offload).
   * Set by the engine; false for a unit kept on the device ([Note: units kept on the device] in api.ts).
   */
  onHost = false;
  /**
   * Whether an offloaded unit's optimizer state (and, with parameter offload, its master slice)
   * lives on the disk tier between steps; false for one kept in host memory ([Note: three tiers]
   * in api.ts) or on the device. Set by the engine.
   */
  onDisk = false;
  /**
   * Whether an offloaded unit's gradient slice stays on the device, where the step that updates it
   * there reads it ([Note: gradients beside the streamed step] in deviceStep.ts): no download after
   * backward, no upload in the step. Set by the engine before the first backward.
   */
  gradsOnDevice = false;
  /** Whether the optimizer step updates this unit on the device ([Note: the step streamed through the device]). Set by the engine. */
  streamed = false;
  /**
   * Whether the gathered parameters stay from step to step (ZeRO stages 1 and 2, or a unit whose
   * parameters are kept on the device): gathered again right after each optimizer step, never
   * freed after forward or backward.
   */
  keptGathered = false;

  constructor(
    /** Dotted path of the unit's module in the root ("model.blocks.3"), "" for the root unit. */
    readonly name: string,
    readonly root: Module,
    readonly layout: UnitLayout,
    readonly groups: UnitGroups,
    /** dtype of the gathered copy (mixed precision's paramDtype), or the master dtype. */
    readonly computeDtype: DType,
    readonly reduceDtype: DType,
    /** Where the unit computes (its gathered parameters and gradient buffers). */
    readonly device: string,
    /** Where the slices and optimizer state live: `device`, or "cpu" when offloaded. */
    masterDevice: string,
    fullParams: readonly Tensor[],
  ) {
    const rank = groups.shard.rank;
    this.segments = segmentsOf(layout, rank);
    const masterDtype = fullParams[0]?.dtype ?? "float32";
    this.resident = layout.shards === 1 && computeDtype === masterDtype && masterDevice === device;
    // The slice is filled from the full parameters, which the caller frees afterwards.
    this.master = noGrad(() =>
      scope(() => {
        const m = this.hostZeros(layout.shardNumel, masterDtype, masterDevice);
        for (const seg of this.segments) {
          if (seg.end === seg.start) continue;
          const src = fullParams[layout.slots.indexOf(seg.slot)].reshape([seg.slot.numel]).narrow(0, seg.start, seg.end - seg.start);
          m.narrow(0, seg.localOffset, seg.end - seg.start).copy_(src.device === masterDevice ? src : src.to(masterDevice));
        }
        return m.keep();
      }),
    ).untrack();
    this.optimParams = this.resident ? this.residentViews() : this.segments.map((s) => parameter(this.master.narrow(0, s.localOffset, s.end - s.start)));
    this.install(this.optimParams);
    if (this.resident) this.state = "gathered";
  }

  /**
   * A zeroed slice where the master lives. On the host it is shared memory, which the CPU
   * optimizer's threads and the disk offload's I/O threads read and write in place.
   */
  private hostZeros(numel: number, dtype: DType, device: string): Tensor {
    return device === "cpu" ? sharedHostMemory(() => zeros([numel], { dtype, device })) : zeros([numel], { dtype, device });
  }

  /**
   * Offloaded to the host of a GPU: page-locks the master slice, so its uploads are direct DMA
   * that never waits on the host. Not for a slice on disk (its memory comes and goes).
   */
  pinHostSlices(): void {
    if (this.masterTier === null) this.pin(this.master);
  }

  private pin(t: Tensor): void {
    const array = pinHostTensor(this.device, t);
    if (array) this.pinned.push(array);
  }

  /**
   * [Note: uploads in the compute dtype] An offloaded unit that computes in a narrower dtype than
   * its master (an explicit `paramDtype`, e.g. bf16 over fp32) would upload its fp32 slice and cast
   * it on the device: 4 bytes a parameter over the bus for each gather, twice a step under
   * FULL_SHARD, where the bus is what bounds an offloaded step. Instead the unit keeps its slice in
   * the compute dtype too, in (pinned) host memory, and uploads that: half the bytes, and no cast
   * on the device. The copy is each segment parameter's kept low-precision copy (autocastCopies in
   * @fulgur/tensor), so a fused AdamW step writes it in the same pass as the fp32 update, with the
   * rounding the device's cast would have: nothing changes but the bytes moved. While it is stale
   * (before the first step, after a load, under an optimizer that does not write copies) the gather
   * uploads the fp32 slice and casts it on the device as before: a cast on the host would run on
   * the main thread, slower than the bus it saves. Called by the engine for a unit whose slice
   * stays in host memory.
   */
  keepHostCopy(): void {
    // The units whose gathers would upload and cast (uploadsAhead), with their master in host memory.
    if (this.hostCopy || !this.uploadsAhead || this.master.device !== "cpu") return;
    const copy = this.hostZeros(this.layout.shardNumel, this.computeDtype, "cpu").untrack();
    this.pin(copy);
    this.hostCopy = copy;
    this.segments.forEach((seg, i) => keepLowPrecisionCopy(this.optimParams[i], copy.narrow(0, seg.localOffset, seg.end - seg.start)));
  }

  /** The slice in the compute dtype kept in host memory for the uploads ([Note: uploads in the compute dtype]), or null. */
  get hostCopySlice(): Tensor | null {
    return this.hostCopy;
  }

  /**
   * What a gather uploads: the host copy in the compute dtype while the optimizer keeps it current,
   * else the master slice (cast on the device, as without a copy).
   */
  private uploadSource(): Tensor {
    const copy = this.hostCopy;
    // An empty segment (this rank holds none of that parameter) has nothing to be stale.
    return copy && this.optimParams.every((p) => p.numel === 0 || isLowPrecisionCopyCurrent(p)) ? copy : this.master;
  }

  /** Where the gradient slice lives: with the master, or on the device for a unit whose step reads it there. */
  private get gradDevice(): string {
    return this.gradsOnDevice ? this.device : this.master.device;
  }

  /** A zeroed gradient slice where it lives (pinned when that is the host of a GPU). */
  private newGradShard(): Tensor {
    const g = this.hostZeros(this.layout.shardNumel, this.master.dtype, this.gradDevice).untrack();
    this.pin(g);
    return g;
  }

  /**
   * Moves a gradient slice kept on the device to the host, where the master is, and points the
   * optimizer's gradients at it: for a step that cannot read it on the device (an optimizer the
   * streamed step does not route). From then on the unit's gradients go to the host as others do.
   */
  bringGradientsHome(): void {
    if (!this.gradsOnDevice) return;
    this.gradsOnDevice = false;
    const onDevice = this.gradShard;
    if (!onDevice || onDevice.device === this.master.device) return;
    noGrad(() => {
      const home = this.newGradShard();
      home.copy_(onDevice);
      this.gradShard = home;
    });
    this.attachStepGradients();
    onDevice.dispose();
  }

  private residentViews(): Tensor[] {
    return this.layout.slots.map((slot) => parameter(this.master.narrow(0, slot.offset, slot.numel).reshape(slot.shape)));
  }

  /** Points the module's parameter entries at `tensors` (one per slot). */
  private install(tensors: readonly Tensor[]): void {
    this.layout.slots.forEach((slot, i) => this.root.setParameter(slot.fqn, tensors[i]));
  }

  /** The parameters the unit computes with, in slot order: full-shape views (gathered) or the resident ones. */
  private computeParams(): readonly Tensor[] {
    return this.resident ? this.optimParams : this.unsharded;
  }

  // ---- gathering -------------------------------------------------------------------------------

  /** Starts gathering the flat parameters (does not wait); a no-op when gathered or gathering. */
  startGather(): void {
    try {
      this.startGatherUnannotated();
    } catch (err) {
      // Out of memory here is the gather's, whatever the Trainer was doing (a prefetch in backward).
      annotateOutOfMemory(err, { phase: "gather", where: `gathering unit ${this.name === "" ? "(root)" : this.name}` });
      throw err;
    }
  }

  /**
   * [Note: upload one unit ahead] An offloaded unit that computes in another dtype than its master
   * (an explicit `paramDtype`) gathers in two steps: the upload of its slice (on CUDA a DMA on the
   * backend's upload stream) and the cast to the compute dtype, a kernel on the compute stream that
   * waits for the upload. The engine starts a unit's gather in the pre-forward hook of the unit
   * `prefetch` places before it, ahead of that unit's kernels; were the upload issued only then,
   * the cast would hold compute until the whole slice had crossed the bus, and copy and compute
   * would not overlap. So the engine starts the upload one unit earlier still (`startUpload`, from
   * the prefetch of the unit before): by the time the cast is queued, the copy has had a unit's
   * compute to run beside. The price is one more slice on the device, from its upload
   * to its gather (estimateShardedMemory counts it). Without a cast there is nothing to wait for on
   * compute (the collective reading the upload waits on its own stream), so nothing is uploaded
   * early; nor for a slice read from disk (its memory comes and goes with each use). With a host
   * copy in the compute dtype ([Note: uploads in the compute dtype]) that copy goes up instead and
   * there is no cast, but a gather at one shard still copies it into the gathered buffer on
   * compute, so it is uploaded ahead all the same.
   */
  startUpload(): void {
    if (this.state !== "sharded" || this.uploaded || !this.uploadsAhead) return;
    try {
      noGrad(() => {
        this.uploaded = this.uploadSource().to(this.device).untrack();
      });
    } catch (err) {
      annotateOutOfMemory(err, { phase: "gather", where: `uploading unit ${this.name === "" ? "(root)" : this.name} ahead of its gather` });
      throw err;
    }
  }

  /** Whether gathers of this unit start with an upload worth issuing early ([Note: upload one unit ahead]). */
  private get uploadsAhead(): boolean {
    return !this.resident && this.master.device !== this.device && this.masterTier === null && this.computeDtype !== this.master.dtype;
  }

  /** Frees an early upload that will not be gathered from (the master changed, or the unit goes). */
  private dropUpload(): void {
    this.uploaded?.dispose();
    this.uploaded = null;
  }

  private startGatherUnannotated(): void {
    if (this.state === "partial") {
      restoreMemory(this.gathered!);
      this.gatherWork = this.groups.postForward!.allGather(this.gathered!, this.partial!);
      this.state = "gathering";
      return;
    }
    if (this.state !== "sharded") return;
    const group = this.groups.shard;
    noGrad(() => {
      if (!this.gathered) this.gathered = zeros([this.layout.paddedNumel], { dtype: this.computeDtype, device: this.device }).untrack();
      else restoreMemory(this.gathered);
      this.withMaster(false, () => {
        // Offloaded slices go up to the device (and to the compute dtype) first: one copy of one slice.
        // An upload started ahead ([Note: upload one unit ahead]) is used, else the slice goes up now.
        const onDevice = this.uploaded ?? (this.master.device === this.device ? this.master : this.uploadSource().to(this.device));
        this.uploaded = null;
        this.gatherSource = onDevice.dtype === this.computeDtype ? (onDevice === this.master ? null : onDevice.untrack()) : onDevice.to(this.computeDtype).untrack();
        if (onDevice !== this.master && onDevice !== this.gatherSource) onDevice.dispose();
        // On the CPU the group reads its input at the call, so a slice from disk may go back at once.
        this.gatherWork = group.allGather(this.gathered!, this.gatherSource ?? this.master);
      });
    });
    this.state = "gathering";
  }

  /** Ensures the gathered parameters are in place (blocks the host only on CPU; on CUDA the stream waits). */
  gather(): void {
    if (this.state === "gathered") return;
    this.startGather();
    this.gatherWork!.synchronize();
    this.gatherWork = null;
    this.gatherSource?.dispose();
    this.gatherSource = null;
    if (this.partial) releaseMemory(this.partial);
    // The transport may write behind the tensor API (NCCL): copies derived from the old values are stale.
    this.gathered!.markModified();
    if (this.unsharded.length === 0) {
      this.unsharded = this.layout.slots.map((slot) => {
        const p = parameter(this.gathered!.narrow(0, slot.offset, slot.numel).reshape(slot.shape));
        this.onUnshardedParam?.(p, this.layout.slots.indexOf(slot));
        return p;
      });
    }
    this.state = "gathered";
  }

  /** Gathers (if needed) and gives the module the full-shape parameters to compute with. */
  activate(): void {
    if (this.resident) return;
    this.gather();
    this.install(this.unsharded);
  }

  /** Gives the module its segments back (what the optimizer and `parameters()` see), keeping gathered data. */
  deactivate(): void {
    if (!this.resident) this.install(this.optimParams);
  }

  /**
   * Gives the module its segments back and frees the gathered memory. [Note: views outlive the
   * memory] The full-shape views are kept: autograd saved them in forward, and backward reads them
   * after `gather` has put the data back into the same storage. Freed here means the storage's
   * memory is returned to the allocator while the storage object stays (PyTorch FSDP resizes it
   * to zero); a read before the next gather fails loudly.
   */
  reshard(): void {
    if (!this.leaveCompute()) return;
    if (this.gathered) releaseMemory(this.gathered);
    if (this.partial) releaseMemory(this.partial);
    this.state = "sharded";
  }

  /**
   * After forward with a post-forward group of k ranks: keeps this rank's 1/k of the gathered
   * buffer (its place in the group; the group's ranks together hold all of it) and frees the rest,
   * so backward gathers within the group only (over a node's links instead of the network), for
   * k times the memory of a shard. The gathered buffer's layout is the ranks' slices in order, and
   * the group is consecutive ranks, so each rank's 1/k is contiguous.
   */
  reshardToPostForwardGroup(): void {
    const group = this.groups.postForward;
    if (!group) return this.reshard();
    if (this.state === "partial" || !this.leaveCompute()) return;
    const part = this.layout.paddedNumel / group.size;
    noGrad(() => {
      if (!this.partial) this.partial = zeros([part], { dtype: this.computeDtype, device: this.device }).untrack();
      else restoreMemory(this.partial);
      this.partial.copy_(this.gathered!.narrow(0, group.rank * part, part));
    });
    releaseMemory(this.gathered!);
    this.state = "partial";
  }

  /**
   * What both ways of resharding start with: a gather under way completes, the module gets its
   * segments back and the cast copies their memory freed. False when there is nothing to reshard
   * (resident, or sharded already).
   */
  private leaveCompute(): boolean {
    if (this.resident || this.state === "sharded") return false;
    if (this.state === "gathering") this.gather();
    this.deactivate();
    this.releaseCastCopies();
    return true;
  }

  /**
   * [Note: autocast copies reshard too] Under autocast each parameter the unit computes with has a
   * low-precision copy kept from step to step. Kept for every unit, they would be a whole model in
   * bf16 on every rank (world > 1) or every layer's bf16 weights alive through the activation peak
   * (world 1), which FSDP2 does not hold: its gathered bf16 copy is freed after forward. So a unit
   * that reshards frees its copies' memory too; the views autograd saved of them stay, and
   * `restoreCastCopies` casts them again before the unit's backward reads them.
   */
  releaseCastCopies(): void {
    for (const p of this.computeParams()) releaseAutocastCopy(p);
  }

  /**
   * Before the unit's backward: its released copies allocated and cast again from the parameters.
   * `beside`: issued a unit ahead, the casts may run beside the backward before (see the engine's
   * [Note: casts ahead of backward]).
   */
  restoreCastCopies(beside = false): void {
    noGrad(() => {
      for (const p of this.computeParams()) restoreAutocastCopy(p, beside);
    });
  }

  /** Called for each full-shape view when it is made (the engine hooks gradient arrival here). */
  onUnshardedParam: ((p: Tensor, slotIndex: number) => void) | null = null;

  // ---- gradients -------------------------------------------------------------------------------

  /** Gives the unit's computing parameters gradient views into a zeroed flat buffer, before its backward. */
  prepareGradients(): void {
    // Alone and resident, the unit's parameters are the optimizer's: autograd's own gradients are
    // the step's, with no flat buffer to zero and no accumulation copy (FSDP at world 1 costs what
    // single-device training costs).
    if (this.resident && this.groups.replicate === null) return;
    if (this.resident) {
      if (!this.gradShard) this.gradShard = this.newGradShard();
      else if (!this.gradFresh) noGrad(() => this.gradShard!.zero_());
      this.gradFresh = true;
      this.attachGradViews(this.optimParams, this.gradShard, (slot) => slot.offset);
      return;
    }
    if (this.flatGrad) return;
    this.flatGrad = zeros([this.layout.paddedNumel], { dtype: this.computeDtype, device: this.device }).untrack();
    this.attachGradViews(this.computeParams(), this.flatGrad, (slot) => slot.offset);
    this.gradsSeen.clear();
  }

  private attachGradViews(params: readonly Tensor[], flat: Tensor, offsetOf: (slot: UnitLayout["slots"][number]) => number): void {
    this.layout.slots.forEach((slot, i) => {
      const p = params[i];
      if (!p.requiresGrad) return;
      if (p.grad && p.grad.storageRef === flat.storageRef) return;
      p.grad?.dispose();
      // The narrowed view is only a step to the shaped one: freed now, it does not hold the flat
      // buffer alive until the step's scope ends (every unit's buffer through a whole backward).
      const span = flat.narrow(0, offsetOf(slot), slot.numel);
      p.grad = span.reshape(slot.shape);
      span.dispose();
      p.grad.untrack();
    });
  }

  /** True once every parameter that requires a gradient has had one this backward. */
  get gradientsComplete(): boolean {
    return this.gradsSeen.size === this.layout.slots.length;
  }

  /**
   * Starts reducing this backward's gradients into the slice (reduce-scatter over the shard group).
   *
   * [Note: reduced into the slice] A step's first reduction writes straight into the gradient
   * slice when the slice is on the device in the reduce dtype: no second slice-sized buffer, no
   * copy. Later ones (the next micro-batches of an accumulation window, or another reduce dtype)
   * need a buffer of their own, which the engine adds into the slice one unit late
   * (`foldReductions`): kept until the step, each micro-batch's reduced slices of every unit were
   * alive through the next micro-batches, memory no plan counted.
   */
  reduceGradients(): void {
    if (this.resident || !this.flatGrad) return;
    const flat = this.flatGrad;
    this.flatGrad = null;
    for (const p of this.computeParams()) {
      if (p.grad) {
        p.grad.dispose();
        p.grad = null;
      }
    }
    noGrad(() => {
      const input = flat.dtype === this.reduceDtype ? flat : flat.to(this.reduceDtype).untrack();
      if (this.groups.shard.size === 1) {
        // One shard: the reduce-scatter's average over one rank is the buffer itself. Taken as the
        // reduced slice, with no copy and no second buffer of the unit's size beside it.
        if (input !== flat) flat.dispose();
        this.pendingReductions.push({ work: COMPLETED_WORK, out: input });
        return;
      }
      const inPlace = !this.gradFresh && this.pendingReductions.length === 0 && this.gradDevice === this.device && this.master.dtype === this.reduceDtype;
      if (inPlace) this.gradShard ??= this.newGradShard();
      const out = inPlace ? this.gradShard! : zeros([this.layout.shardNumel], { dtype: this.reduceDtype, device: this.device }).untrack();
      const work = this.groups.shard.reduceScatter(out, input, "avg");
      // The inputs may be freed once the collective has read them: on CPU at the call, on CUDA
      // the allocator orders the free after the collective's stream use.
      if (input !== flat) input.dispose();
      flat.dispose();
      this.pendingReductions.push({ work, out });
      // The slice holds this step's gradients once the work is done (finishReductions waits for it).
      if (inPlace) this.gradFresh = true;
    });
  }

  /**
   * Adds the reductions started so far into the gradient slice and frees their buffers, where the
   * slice is on the device ([Note: reduced into the slice]). Offloaded to a GPU's host, the
   * download queue moves them instead, and the step adds the rest. While every reduction went
   * straight into the slice there is nothing to free: compute is not made to wait for them (on
   * CUDA a stream wait on the collective), only the step is.
   */
  foldReductions(): void {
    if (this.gradDevice !== this.device || this.pendingReductions.every((r) => r.out === this.gradShard)) return;
    this.finishReductions();
  }

  /**
   * Offloaded to the host of a GPU: starts this step's reduced gradients on their way down without
   * waiting, so the copies run beside the rest of backward. The engine calls it one unit late, when
   * the reduction has had a unit's backward to finish.
   *
   * [Note: later micro-batches added beside backward] A step's first reduction comes down straight
   * into the gradient slice. The next micro-batches' (an accumulation window) come down into pinned
   * scratch buffers shared by the engine's units, and once down, the CPU's worker threads add them
   * into the slice (`addBeside`), one add at a time per unit and only after the copies before have
   * landed, while the main thread goes on with backward. Done at the step on the main thread, those
   * adds were a synchronous download and a one-thread pass over every offloaded gradient for each
   * micro-batch after the first. Without a scratch pool they are still added at the step.
   */
  startDownloads(): void {
    if (this.pendingReductions.length === 0 || this.gradDevice !== "cpu" || this.device === "cpu") return;
    if (this.gradFresh && this.scratch === null) return;
    const backend = getBackend(this.device);
    if (!backend.readIntoAsync) return;
    while (this.pendingReductions.length > 0) {
      const { work, out } = this.pendingReductions.shift()!;
      work.synchronize();
      noGrad(() => {
        const src = out.dtype === this.master.dtype ? out : out.to(this.master.dtype).untrack();
        if (src !== out) out.dispose();
        this.gradShard ??= this.newGradShard();
        const into = this.gradFresh ? this.scratch!.take(this.layout.shardNumel) : null;
        const target = into ?? this.gradShard;
        this.downloads.push({ read: backend.readIntoAsync!(src, target.backend.readShared!(target)), out: src, into });
      });
      this.gradFresh = true;
    }
  }

  /** Frees the device slices whose download has finished, in order, and moves the adds along (no wait). */
  sweepDownloads(): void {
    // In order: a sum may start only once the copies before it (the slice's own first) are in.
    while (this.downloads.length > 0 && this.downloads[0].read.poll()) this.land(this.downloads.shift()!);
    this.advanceSums(false);
  }

  /** Whether a gradient of this unit is still on its way down. */
  get downloading(): boolean {
    return this.downloads.length > 0;
  }

  /** Waits for this unit's gradients to arrive (in the slice, or in scratch buffers whose adds then start) and frees their device copies. */
  waitDownloads(): void {
    for (const d of this.downloads.splice(0)) this.land(d);
    this.advanceSums(false);
  }

  private land(d: { read: PendingRead; out: Tensor; into: Tensor | null }): void {
    d.read.wait();
    d.out.dispose();
    if (d.into) this.landedSums.push(d.into);
  }

  /** Finishes the add under way when it is done (or, with `wait`, every add), and starts the next. */
  private advanceSums(wait: boolean): void {
    for (;;) {
      if (this.adding) {
        if (!wait && !this.adding.work.poll()) return;
        this.adding.work.wait();
        this.scratch!.give(this.adding.from);
        this.adding = null;
      }
      const next = this.landedSums.shift();
      if (!next) return;
      this.adding = { work: addBeside(this.gradShard!, next), from: next };
    }
  }

  /**
   * Moves this unit's copies and adds along without waiting; true once every reduction of this step
   * is in the gradient slice's memory, none on its way (the step beside backward reads them there).
   */
  landGradients(): boolean {
    if (!this.gradFresh) return false;
    this.sweepDownloads();
    return this.downloads.length === 0 && this.adding === null && this.landedSums.length === 0 && this.pendingReductions.every((r) => r.out === this.gradShard && r.work.isCompleted());
  }

  /** Waits for the reductions started and adds them into the gradient slice. */
  finishReductions(): void {
    this.waitDownloads();
    this.advanceSums(true);
    for (const { work, out } of this.pendingReductions.splice(0)) {
      work.synchronize();
      if (out === this.gradShard) continue;
      noGrad(() => {
        if (!this.gradShard) {
          this.gradShard = this.newGradShard();
          this.gradFresh = false;
        }
        // Offloaded: the reduced slice comes down to the host here, once per micro-batch; the
        // first one straight into the slice's memory.
        if (!this.gradFresh && out.dtype === this.gradShard.dtype) this.gradShard.copy_(out);
        else {
          const down = scope(() => out.to(this.gradDevice).to(this.master.dtype).keep());
          if (this.gradFresh) this.gradShard.add_(down);
          else this.gradShard.copy_(down);
          down.dispose();
        }
        this.gradFresh = true;
      });
      out.dispose();
    }
  }

  /** Replicas average their slices (HYBRID_SHARD, NO_SHARD across ranks): once per optimizer step. */
  averageReplicas(): Work | null {
    const replicate = this.groups.replicate;
    if (!replicate || replicate.size === 1 || !this.gradShard) return null;
    return replicate.allReduce(this.gradShard, "avg");
  }

  /** Gives the optimizer's parameters their gradient views for the step (zeros where nothing arrived). */
  attachStepGradients(): void {
    if (this.resident) return;
    if (!this.gradShard) {
      this.gradShard = this.newGradShard();
      this.gradFresh = true;
    }
    this.segments.forEach((seg, i) => {
      const p = this.optimParams[i];
      if (!p.requiresGrad) return;
      // Attached already (a unit updated beside backward): that view may be in the update's hands.
      if (p.grad && p.grad.storageRef === this.gradShard!.storageRef) return;
      p.grad?.dispose();
      p.grad = this.gradShard!.narrow(0, seg.localOffset, seg.end - seg.start);
      p.grad.untrack();
    });
  }

  /** After the optimizer step: the next step's first gradients overwrite the slice. */
  stepped(): void {
    this.gradFresh = false;
    // The master slice changed: an upload of the old values is stale.
    this.dropUpload();
    // The master slice changed: a kept gathered copy is stale.
    if (!this.resident && this.state !== "sharded") this.reshard();
  }

  /**
   * Bytes this unit holds now: its slices (master and gradient, where they live) and its gathered
   * buffer (on the device; 0 while freed or resident), with a slice uploaded ahead of its gather.
   */
  heldBytes(): { readonly slices: number; readonly gathered: number; readonly deviceGradients: number } {
    const live = (t: Tensor | null): number => (t && t.storageRef.hasMemory ? t.storageRef.bytes : 0);
    // A gradient slice kept on the device for the step is counted there, apart from the slices.
    const onDevice = this.gradShard !== null && this.gradShard.device !== this.master.device;
    return { slices: live(this.master) + (onDevice ? 0 : live(this.gradShard)) + live(this.hostCopy), deviceGradients: onDevice ? live(this.gradShard) : 0, gathered: this.resident ? 0 : live(this.gathered) + live(this.partial) + live(this.uploaded) };
  }

  // ---- whole values (checkpoints) ---------------------------------------------------------------

  /**
   * Lays per-segment tensors (one per listed slot, shaped like that slot's segment here) into a
   * slice, gathers it over the shard group, and returns each listed slot's whole value. All ranks
   * must call it together; the result is in the tensors' dtype, full-shape, owned by the caller.
   */
  gatherSegments(items: readonly { index: number; tensor: Tensor }[]): Tensor[] {
    if (items.length === 0) return [];
    const dtype = items[0].tensor.dtype;
    const device = this.device;
    return noGrad(() => {
      const slice = zeros([this.layout.shardNumel], { dtype, device }).untrack();
      const whole = zeros([this.layout.paddedNumel], { dtype, device }).untrack();
      try {
        // In a scope: the views would otherwise hold the slice's memory after it is disposed.
        scope(() => {
          for (const { index, tensor } of items) {
            const seg = this.segments[index];
            if (seg.end > seg.start) slice.narrow(0, seg.localOffset, seg.end - seg.start).copy_(tensor.reshape([seg.end - seg.start]).to(device));
          }
        });
        this.groups.shard.allGather(whole, slice).synchronize();
        // On the master's device the results are views of the gathered buffer, which lives until
        // the last of them is disposed: a gather holds the unit once, not twice (a copy per slot
        // beside the buffer). Offloaded masters get host copies and the buffer goes at once.
        const onMasterDevice = this.master.device === device;
        return items.map(({ index }) => {
          const slot = this.layout.slots[index];
          return scope(() => {
            const view = whole.narrow(0, slot.offset, slot.numel).reshape(slot.shape);
            return (onMasterDevice ? view : view.to(this.master.device).contiguous()).keep();
          }).untrack();
        });
      } finally {
        slice.dispose();
        whole.dispose();
      }
    });
  }

  /** Every parameter's whole value (master dtype), in slot order; all ranks call it together. */
  fullValues(): Tensor[] {
    return this.withMaster(false, () => this.gatherSegments(this.layout.slots.map((_, index) => ({ index, tensor: this.localSegment(index) }))));
  }

  /**
   * Runs `fn` with the master slice in memory: read from the disk tier first when it is there, and
   * put back afterwards (written only when `changed`).
   */
  withMaster<T>(changed: boolean, fn: () => T): T {
    const tier = this.masterTier;
    if (!tier) return fn();
    tier.fetch([this.master]);
    try {
      return fn();
    } finally {
      tier.evict([this.master], changed);
    }
  }

  /** This rank's segment of slot `index` in the master slice (a view, flat). */
  localSegment(index: number): Tensor {
    const seg = this.segments[index];
    return this.master.narrow(0, seg.localOffset, seg.end - seg.start);
  }

  /**
   * The part of a whole value of slot `index` this rank holds, shaped like the parameter the
   * optimizer steps: the flat segment, or the whole shape for a resident unit. One view, which the
   * caller disposes: the flat view on the way to it is freed here (called outside any step's
   * scope, as a resume loads optimizer state, it held every whole value it was made from alive
   * for the rest of training: two copies of the model's size under AdamW).
   */
  sliceOf(index: number, whole: Tensor): Tensor {
    const seg = this.segments[index];
    const slot = this.layout.slots[index];
    if (whole.numel !== slot.numel) {
      throw new RangeError(`${slot.fqn}: a value of shape [${whole.shape.join(", ")}] for a parameter of shape [${slot.shape.join(", ")}]`);
    }
    if (this.resident) return whole.reshape(slot.shape);
    return scope(() => whole.contiguous().reshape([slot.numel]).narrow(0, seg.start, seg.end - seg.start));
  }

  /** Copies this rank's segments (slot order, each flat and of the segment's length) into the master slice. */
  loadSegments(values: readonly Tensor[]): void {
    this.withMaster(true, () => this.copySegments(values));
  }

  private copySegments(values: readonly Tensor[]): void {
    this.dropUpload();
    noGrad(() =>
      scope(() => {
        values.forEach((v, i) => {
          const seg = this.segments[i];
          const length = seg.end - seg.start;
          if (v.numel !== length) throw new RangeError(`${seg.slot.fqn}: a segment of ${v.numel} elements where this rank holds ${length}`);
          if (length > 0) this.localSegment(i).copy_(v.device === this.master.device ? v.reshape([length]) : v.to(this.master.device).reshape([length]));
        });
      }),
    );
    this.master.markModified();
  }

  /** Copies this rank's parts of whole parameter values (slot order) into the master slice. */
  loadFull(values: readonly Tensor[]): void {
    this.withMaster(true, () => this.copyFull(values));
  }

  private copyFull(values: readonly Tensor[]): void {
    this.dropUpload();
    noGrad(() =>
      scope(() => {
        values.forEach((v, i) => {
          const seg = this.segments[i];
          if (seg.end > seg.start) this.localSegment(i).copy_(this.sliceOf(i, v.device === this.master.device ? v : v.to(this.master.device)).reshape([seg.end - seg.start]));
        });
      }),
    );
    this.master.markModified();
  }

  dispose(): void {
    this.waitDownloads();
    this.advanceSums(true);
    this.dropUpload();
    this.reshard();
    for (const p of this.unsharded) p.dispose();
    this.unsharded = [];
    this.gathered?.dispose();
    this.gathered = null;
    for (const { out } of this.pendingReductions.splice(0)) if (out !== this.gradShard) out.dispose();
    this.gradShard?.dispose();
    this.gradShard = null;
    if (this.hostCopy) {
      for (const p of this.optimParams) dropAutocastCopy(p);
      this.hostCopy.dispose();
      this.hostCopy = null;
    }
    for (const array of this.pinned.splice(0)) getBackend(this.device).unpinHost?.(array);
  }
}
