/**
 * DDPStrategy: data-parallel training, one process per device (DESIGN.md decision 1). Every rank
 * holds the whole model; parameters start equal (broadcast from rank 0), each rank runs forward
 * and backward on its shard of the batch, gradients are averaged across ranks bucket by bucket
 * while backward still runs (reducer.ts), and every rank takes the same optimizer step — so the
 * losses are those of one device on the global batch (decision 8).
 *
 * The process group is whatever the job provides: the accelerator's own (NCCL, when it offers
 * `createProcessGroup`) or the CPU group over TCP from @fulgur/distributed. The rendezvous store
 * always comes from `initProcessGroup` (rank 0 hosts it; FULGUR_STORE_TOKEN authenticates).
 */
import {
  CONTRACT_VERSION,
  type BackwardSyncControl,
  type Checkpoint,
  type Launching,
  type OptimizerStepOptions,
  type OptimizerStepResult,
  type ProcessGroup,
  type ReduceOp,
  type Strategy,
  type StrategyContext,
  providesProcessGroup,
} from "@fulgur/core";
import { type Initialized, initProcessGroup } from "@fulgur/distributed";
import { type Module, type Optimizer, clipGradNorm, clipGradValue } from "@fulgur/nn";
import { type Tensor, noGrad } from "@fulgur/tensor";
import { type DDPOptions, type ResolvedDDPOptions, parseDDPOptions } from "./api";
import { type Race, broadcastJson, broadcastTensors, identityRace, reduceScalar } from "./collectives";
import { FailureGuard } from "./failureGuard";
import { forkWorkers, relaunchScript } from "./launchers";
import { Reducer } from "./reducer";

/** The rank layout disagrees with what the Trainer was asked for. */
export class DDPSetupError extends Error {
  override readonly name = "DDPSetupError";
}

export class DDPStrategy implements Strategy, BackwardSyncControl, Launching {
  readonly contractVersion = CONTRACT_VERSION;
  readonly name: string;
  readonly options: ResolvedDDPOptions;
  private context: StrategyContext | null = null;
  private job: Initialized | null = null;
  private group: ProcessGroup | null = null;
  private guard: FailureGuard | null = null;
  private reducer: Reducer | null = null;
  private module: Module | null = null;
  private device = "cpu";
  private rank = 0;
  private local = 0;
  private world = 1;
  /** True in a process that only launched the ranks and waited for them (it is not a rank). */
  private launcherOnly = false;
  private tornDown = false;
  /** Undoes the zeroGrad wrappers installed on the module and optimizers. */
  private readonly unwrap: (() => void)[] = [];

  constructor(options: DDPOptions = {}, name = "ddp") {
    this.options = parseDDPOptions(options, name);
    this.name = name;
  }

  get rootDevice(): string {
    return this.device;
  }
  get globalRank(): number {
    return this.rank;
  }
  get localRank(): number {
    return this.local;
  }
  get worldSize(): number {
    return this.world;
  }
  /** False in the launching process, so rank-0-only code after fit() does not run there too. */
  get isGlobalZero(): boolean {
    return this.rank === 0 && !this.launcherOnly;
  }

  /** The process group gradients are reduced on (after setup). */
  get processGroup(): ProcessGroup {
    if (!this.group) throw new Error(`${this.name}: setup() must run before the process group is used`);
    return this.group;
  }

  private ctx(): StrategyContext {
    if (!this.context) throw new Error(`${this.name}: setup() must run before training`);
    return this.context;
  }

  private readonly race: Race = (p) => (this.guard ? this.guard.race(p) : identityRace(p));

  private log(message: string): void {
    if (this.options.verbose && this.rank === 0) console.log(message);
  }

  // ---- launching ---------------------------------------------------------------------------------

  async launch(context: { devices: number; numNodes: number; script: string; argv: readonly string[] }): Promise<"continue" | "done"> {
    this.launcherOnly = true;
    const o = { ...context, killGraceMs: this.options.killGraceMs };
    if (this.options.startMethod === "spawn") await forkWorkers(o);
    else await relaunchScript(o);
    return "done";
  }

  // ---- setup -------------------------------------------------------------------------------------

  async setup(context: StrategyContext): Promise<void> {
    const cluster = context.cluster;
    const world = cluster.worldSize();
    const expected = context.devices * context.numNodes;
    if (world !== expected) {
      throw new DDPSetupError(
        `${this.name}: the ${cluster.name} cluster environment says WORLD_SIZE=${world}, but the Trainer was asked for ` +
          `devices=${context.devices} × numNodes=${context.numNodes} = ${expected} processes; make them agree ` +
          `(e.g. \`fulgur run --nproc-per-node ${context.devices}\` with devices: ${context.devices}, or devices: ${world} for this launch)`,
      );
    }
    this.context = context;
    this.world = world;
    this.rank = cluster.globalRank();
    this.local = cluster.localRank();
    this.device = context.accelerator.deviceFor(this.local);
    await context.accelerator.setupDevice(this.device);
    const job = await initProcessGroup({ cluster, timeoutMs: this.options.timeoutMs });
    this.job = job;
    try {
      this.group = providesProcessGroup(context.accelerator)
        ? await context.accelerator.createProcessGroup({ store: job.store, rank: this.rank, size: world, device: this.device, timeoutMs: this.options.timeoutMs })
        : job.group;
      if (this.group.size !== world || this.group.rank !== this.rank) {
        throw new DDPSetupError(
          `${this.name}: the process group has rank ${this.group.rank} of ${this.group.size}; the cluster environment says rank ${this.rank} of ${world}`,
        );
      }
    } catch (err) {
      await job.shutdown().catch(() => undefined);
      this.job = null;
      throw err;
    }
    if (world > 1) {
      this.guard = new FailureGuard({
        store: job.store,
        rank: this.rank,
        worldSize: world,
        log: (m) => process.stderr.write(`${m}\n`),
        // Pending collectives can never complete now: fail them instead of waiting out the timeout.
        onRemoteFailure: () => void this.group?.destroy().catch(() => undefined),
      });
      this.guard.start();
      // [Note: first message] One tiny all-reduce (an all-to-all exchange) checks that every rank
      // reaches every other before any work, and opens each connection with a small message: the
      // CPU group's transport refuses a first message over 64 KiB that arrives together with the
      // connection's hello (see the package README, "Known issues").
      const joined = await reduceScalar(this.group, 1, "sum", this.race);
      if (joined !== world) throw new DDPSetupError(`${this.name}: ${joined} ranks answered the join check; expected ${world}`);
    }
    this.log(`${this.name}: ${world} process(es) joined; backend ${this.group.backend}, device ${this.device}`);
  }

  async setupModule(module: Module): Promise<Module> {
    const group = this.processGroup;
    module.to(this.device);
    // Every rank starts from rank 0's weights, whatever seed each used.
    if (this.world > 1) await broadcastTensors(group, [...module.parameters(), ...module.buffers()], 0, this.race);
    this.reducer?.remove();
    this.reducer = new Reducer(group, module.namedParameters(), {
      bucketCapBytes: this.options.bucketCapMb * 2 ** 20,
      findUnusedParameters: this.options.findUnusedParameters,
      staticGraph: this.options.staticGraph,
      gradientAsBucketView: this.options.gradientAsBucketView,
      log: (m) => this.log(m),
    });
    this.module = module;
    this.wrapZeroGrad(module, () => module.parameters());
    return module;
  }

  async setupOptimizer(optimizer: Optimizer): Promise<Optimizer> {
    this.wrapZeroGrad(optimizer, () => optimizer.paramGroups.flatMap((g) => g.params));
    return optimizer;
  }

  /**
   * Gradients in buckets must be zeroed in place, never dropped: dropping them would detach the
   * views (DESIGN.md decision 5). Other parameters keep the usual behaviour.
   */
  private wrapZeroGrad(target: Module | Optimizer, params: () => Tensor[]): void {
    const owner = target as unknown as { zeroGrad: (setToNone?: boolean) => void };
    if (Object.prototype.hasOwnProperty.call(owner, "zeroGrad")) return;
    owner.zeroGrad = (setToNone = true) => {
      this.reducer?.zeroGrad();
      for (const p of params()) {
        const g = p.grad;
        if (!g || this.reducer?.manages(p)) continue;
        if (setToNone) {
          p.grad = null;
          g.dispose();
        } else noGrad(() => g.zero_());
      }
    };
    this.unwrap.push(() => delete (owner as { zeroGrad?: unknown }).zeroGrad);
  }

  // ---- the step ----------------------------------------------------------------------------------

  backward(loss: Tensor): void {
    this.reducer?.prepareForBackward(loss);
    this.ctx().precision.backward(loss);
  }

  noBackwardSync<T>(_module: Module, fn: () => T): T {
    const reducer = this.reducer;
    if (!reducer) return fn();
    const previous = reducer.noSync;
    reducer.noSync = true;
    try {
      return fn();
    } finally {
      reducer.noSync = previous;
    }
  }

  async optimizerStep(optimizer: Optimizer, options: OptimizerStepOptions): Promise<OptimizerStepResult> {
    const context = this.ctx();
    if (this.reducer) await this.race(this.reducer.finish());
    // Gradients are now equal on every rank, so every rank unscales, clips and steps alike.
    const finite = context.precision.unscaleGradients(optimizer);
    let gradNorm: number | undefined;
    if (options.gradientClipVal !== undefined && finite) {
      const params = optimizer.paramGroups.flatMap((g) => g.params);
      if ((options.gradientClipAlgorithm ?? "norm") === "norm") gradNorm = clipGradNorm(params, options.gradientClipVal);
      else clipGradValue(params, options.gradientClipVal);
    }
    const stepped = context.precision.optimizerStep(optimizer, finite);
    optimizer.zeroGrad(true);
    if (this.options.broadcastBuffers && this.module) {
      const buffers = this.module.buffers();
      if (buffers.length > 0 && this.world > 1) await broadcastTensors(this.processGroup, buffers, 0, this.race);
    }
    return gradNorm === undefined ? { stepped } : { stepped, gradNorm };
  }

  // ---- communication -----------------------------------------------------------------------------

  /** Collectives need every rank of a live job: not before setup, not after teardown. */
  private liveGroup(op: string): ProcessGroup {
    if (this.tornDown) {
      throw new Error(`${this.name}.${op}: the strategy was torn down (fit() has ended); call collectives while training, e.g. in callbacks`);
    }
    return this.processGroup;
  }

  async reduce(value: number, op: ReduceOp = "avg"): Promise<number> {
    const group = this.liveGroup("reduce");
    if (this.world === 1) return value;
    return reduceScalar(group, value, op, this.race);
  }

  async barrier(_name?: string): Promise<void> {
    const group = this.liveGroup("barrier");
    if (this.world === 1) return;
    await this.race(group.barrier().wait());
  }

  async broadcast<T>(value: T, src = 0): Promise<T> {
    return broadcastJson(this.liveGroup("broadcast"), value, src, this.race);
  }

  // ---- checkpoints -------------------------------------------------------------------------------

  /** Replicated: every rank holds the full state; rank 0 is the one that writes it. */
  async moduleStateDict(module: Module): Promise<Record<string, Tensor>> {
    return module.stateDict();
  }

  async loadModuleStateDict(module: Module, state: Record<string, Tensor>): Promise<void> {
    module.loadStateDict(state);
  }

  async saveCheckpoint(checkpoint: Checkpoint, path: string): Promise<void> {
    if (this.rank === 0) await this.ctx().checkpointIO.save(checkpoint, path);
    // Nobody reads the file (or removes an older one) before it is complete.
    await this.barrier("saveCheckpoint");
  }

  async loadCheckpoint(path: string): Promise<Checkpoint> {
    return this.ctx().checkpointIO.load(path, { device: this.rootDevice });
  }

  /** Reports this rank's failure to every rank (Lightning's on_exception); the Trainer may call it before teardown. */
  async onException(error: unknown): Promise<void> {
    await this.guard?.report(error);
  }

  // ---- teardown ----------------------------------------------------------------------------------

  async teardown(): Promise<void> {
    if (this.launcherOnly || this.tornDown) return;
    this.tornDown = true;
    for (const undo of this.unwrap.splice(0)) undo();
    this.reducer?.remove();
    this.reducer = null;
    this.module = null;
    const job = this.job;
    this.job = null;
    if (!job) return;
    const guard = this.guard;
    if (!guard) {
      await job.shutdown();
      return;
    }
    // [Note: deferred shutdown] teardown runs in the Trainer's `finally`, on success and on failure
    // alike, and cannot tell which. Leaving the job takes a barrier with every rank, which must not
    // be entered by a rank whose error is still on its way to the uncaught-error handler (the
    // peers wait in a gradient all-reduce; a barrier there would be a collective mismatch that
    // hides the real error). So the shutdown runs on the next turn of the event loop: by then a
    // failing rank's handler has taken over and reports the error instead.
    setTimeout(() => void this.shutdown(job, guard), 0);
  }

  private async shutdown(job: Initialized, guard: FailureGuard): Promise<void> {
    if (guard.isHandlingFailure) return;
    guard.beginClosing();
    try {
      if (guard.remoteFailure) await job.group.destroy();
      else await guard.race(job.shutdown());
    } catch (err) {
      process.stderr.write(`${this.name}: rank ${this.rank} could not leave the job cleanly: ${(err as Error).message}\n`);
    } finally {
      guard.stop();
      await job.store.close().catch(() => undefined);
      await job.server?.close().catch(() => undefined);
    }
  }
}
