/**
 * ParallelStrategy: what every multi-process strategy needs, one process per device (DESIGN.md
 * decision 1). It starts the ranks when nothing started them (relaunch or spawn), joins the job
 * (the rendezvous store from `initProcessGroup`, rank 0 hosting it), picks the process group (the
 * accelerator's own, NCCL on GPUs, else the CPU group; "host" stages any device's tensors through
 * the CPU transport so several ranks can share one GPU, decision 16), makes failures travel
 * (failureGuard.ts, decision 12), offers collectives on numbers, JSON values and tensors, and
 * leaves the job cleanly. Subclasses add what is theirs: DDP's reducer, FSDP's sharded units.
 */
import {
  type ExceptionAware,
  type Launching,
  type MemoryEstimate,
  type MemoryEstimateInput,
  type ProcessGroup,
  type ReduceOp,
  type StepCollectives,
  type StrategyContext,
  providesProcessGroup,
} from "@fulgur/core";
import { type Initialized, initProcessGroup } from "@fulgur/distributed";
import { type Tensor, noGrad, zeros } from "@fulgur/tensor";
import { BaseStrategy, type BaseStrategyOptions } from "./baseStrategy";
import { type Race, broadcastJson, broadcastTensors, identityRace, reduceScalar } from "./collectives";
import { FailureGuard } from "./failureGuard";
import { forkWorkers, relaunchScript } from "./launchers";
import { estimateReplicatedMemory } from "./memoryEstimate";
import { PARALLEL_DEFAULTS, type ParallelOptions } from "./options";

/** The rank layout disagrees with what the Trainer was asked for. */
export class StrategySetupError extends Error {
  override readonly name: string = "StrategySetupError";
}

export abstract class ParallelStrategy extends BaseStrategy implements Launching, ExceptionAware {
  protected readonly parallel: Readonly<Required<ParallelOptions>>;
  private job: Initialized | null = null;
  private group: ProcessGroup | null = null;
  private guard: FailureGuard | null = null;
  private rank = 0;
  private local = 0;
  private world = 1;
  /** True in a process that only launched the ranks and waited for them (it is not a rank). */
  private launcherOnly = false;
  private tornDown = false;

  constructor(options: ParallelOptions & BaseStrategyOptions = {}) {
    super(options);
    this.parallel = Object.freeze({ ...PARALLEL_DEFAULTS, ...definedOnly(options) }) as Readonly<Required<ParallelOptions>>;
  }

  override get globalRank(): number {
    return this.rank;
  }
  override get localRank(): number {
    return this.local;
  }
  override get worldSize(): number {
    return this.world;
  }
  /** False in the launching process, so rank-0-only code after fit() does not run there too. */
  override get isGlobalZero(): boolean {
    return this.rank === 0 && !this.launcherOnly;
  }

  /** The world process group (after setup). */
  get processGroup(): ProcessGroup {
    if (!this.group) throw new Error(`${this.name}: setup() must run before the process group is used`);
    return this.group;
  }

  /** Settles like `p`, or fails at once with another rank's failure (decision 12). */
  protected readonly race: Race = (p) => (this.guard ? this.guard.race(p) : identityRace(p));

  /** A line on rank 0's stdout; subclasses may silence it (ddp_notverbose). */
  protected log(message: string): void {
    if (this.rank === 0) console.log(message);
  }

  // ---- launching ---------------------------------------------------------------------------------

  async launch(context: { devices: number; numNodes: number; script: string; argv: readonly string[] }): Promise<"continue" | "done"> {
    this.launcherOnly = true;
    const o = { ...context, killGraceMs: this.parallel.killGraceMs, strategyName: this.name };
    if (this.parallel.startMethod === "spawn") await forkWorkers(o);
    else await relaunchScript(o);
    return "done";
  }

  // ---- setup -------------------------------------------------------------------------------------

  override async setup(context: StrategyContext): Promise<void> {
    const cluster = context.cluster;
    const world = cluster.worldSize();
    const expected = context.devices * context.numNodes;
    if (world !== expected) {
      throw new StrategySetupError(
        `${this.name}: the ${cluster.name} cluster environment says WORLD_SIZE=${world}, but the Trainer was asked for ` +
          `devices=${context.devices} × numNodes=${context.numNodes} = ${expected} processes; make them agree ` +
          `(e.g. \`fulgur run --nproc-per-node ${context.devices}\` with devices: ${context.devices}, or devices: ${world} for this launch)`,
      );
    }
    this.world = world;
    this.rank = cluster.globalRank();
    this.local = cluster.localRank();
    await super.setup(context);
    const job = await initProcessGroup({ cluster, timeoutMs: this.parallel.timeoutMs });
    this.job = job;
    try {
      const useAccelerator = this.parallel.processGroupBackend === "auto" && providesProcessGroup(context.accelerator);
      this.group = useAccelerator
        ? await context.accelerator.createProcessGroup({ store: job.store, rank: this.rank, size: world, device: this.rootDevice, timeoutMs: this.parallel.timeoutMs })
        : job.group;
      if (this.group.size !== world || this.group.rank !== this.rank) {
        throw new StrategySetupError(
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
        label: this.name,
        log: (m) => process.stderr.write(`${m}\n`),
        // Pending collectives can never complete now: fail them instead of waiting out the timeout.
        onRemoteFailure: () => void this.group?.destroy().catch(() => undefined),
      });
      this.guard.start();
      // [Note: first message] One tiny all-reduce (an all-to-all exchange) checks that every rank
      // reaches every other before any work, and opens each connection with a small message: the
      // CPU group's transport refuses a first message over 64 KiB that arrives together with the
      // connection's hello (see @fulgur/distributed's README, "Known issues").
      const joined = await reduceScalar(this.group, 1, "sum", this.race);
      if (joined !== world) throw new StrategySetupError(`${this.name}: ${joined} ranks answered the join check; expected ${world}`);
    }
    this.log(`${this.name}: ${world} process(es) joined; backend ${this.group.backend}, device ${this.rootDevice}`);
  }

  // ---- communication -----------------------------------------------------------------------------

  /** Collectives need every rank of a live job: not before setup, not after teardown. */
  protected liveGroup(op: string): ProcessGroup {
    if (this.tornDown) {
      throw new Error(`${this.name}.${op}: the strategy was torn down (fit() has ended); call collectives while training, e.g. in callbacks`);
    }
    return this.processGroup;
  }

  override async reduce(value: number, op: ReduceOp = "avg"): Promise<number> {
    const group = this.liveGroup("reduce");
    if (this.world === 1) return super.reduce(value);
    return reduceScalar(group, value, op, this.race);
  }

  override async barrier(_name?: string): Promise<void> {
    const group = this.liveGroup("barrier");
    if (this.world === 1) return;
    await this.race(group.barrier().wait());
  }

  override async broadcast<T>(value: T, src = 0): Promise<T> {
    return broadcastJson(this.liveGroup("broadcast"), value, src, this.race);
  }

  override async allGather(tensor: Tensor): Promise<Tensor> {
    const group = this.liveGroup("allGather");
    const input = noGrad(() => tensor.contiguous());
    const out = zeros([this.world, ...tensor.shape], { dtype: tensor.dtype, device: tensor.device });
    try {
      await this.race(group.allGather(out, input).wait());
    } catch (err) {
      out.dispose();
      throw err;
    } finally {
      if (input !== tensor) input.dispose();
    }
    return out;
  }

  override async broadcastTensors(tensors: readonly Tensor[], src = 0): Promise<void> {
    if (this.world > 1) await broadcastTensors(this.liveGroup("broadcastTensors"), tensors, src, this.race);
  }

  /**
   * For the optimizer step of strategies whose ranks hold different gradients: overflow is decided
   * over every rank, the clipping norm summed over `normGroup`, the ranks whose gradients together
   * make the whole (the world; one shard group when replicas hold the same slices; null when every
   * rank already holds whole gradients).
   */
  protected stepCollectives(normGroup: ProcessGroup | null = this.processGroup): StepCollectives {
    return {
      allFinite: async (local) => (await this.reduce(local ? 1 : 0, "min")) === 1,
      sumOverRanks: async (local) => (normGroup && normGroup.size > 1 ? reduceScalar(normGroup, local, "sum", this.race) : local),
    };
  }

  /** Reports this rank's failure to every rank (Lightning's on_exception); the Trainer calls it before teardown. */
  async onException(error: unknown): Promise<void> {
    await this.guard?.report(error);
  }

  override estimateMemory(input: MemoryEstimateInput): MemoryEstimate {
    return estimateReplicatedMemory(this.name, input, { communicationBytes: 0 });
  }

  // ---- teardown ----------------------------------------------------------------------------------

  /** Undo what setupModule did to the module (hooks, wrappers); runs first in teardown. */
  protected releaseModule(): void {}

  override async teardown(): Promise<void> {
    if (this.launcherOnly || this.tornDown) return;
    this.tornDown = true;
    this.releaseModule();
    const job = this.job;
    this.job = null;
    if (!job) return;
    const guard = this.guard;
    if (!guard) {
      await this.destroyAcceleratorGroup(job);
      await job.shutdown();
      return;
    }
    // [Note: deferred shutdown] teardown runs in the Trainer's `finally`, on success and on failure
    // alike, and cannot tell which. Leaving the job takes a barrier with every rank, which must not
    // be entered by a rank whose error is still on its way to the uncaught-error handler (the
    // peers wait in a collective; a barrier there would be a collective mismatch that hides the
    // real error). So the shutdown runs on the next turn of the event loop: by then a failing
    // rank's handler has taken over and reports the error instead.
    setTimeout(() => void this.shutdown(job, guard), 0);
  }

  /**
   * The accelerator's own group (NCCL) is ended here, while the process is whole: a communicator
   * left to process exit meets a CUDA context already being torn down.
   */
  private async destroyAcceleratorGroup(job: Initialized): Promise<void> {
    const group = this.group;
    this.group = null;
    if (group && group !== job.group) await group.destroy();
  }

  private async shutdown(job: Initialized, guard: FailureGuard): Promise<void> {
    if (guard.isHandlingFailure) return;
    guard.beginClosing();
    try {
      if (guard.remoteFailure) await job.group.destroy();
      else {
        await this.destroyAcceleratorGroup(job);
        await guard.race(job.shutdown());
      }
    } catch (err) {
      process.stderr.write(`${this.name}: rank ${this.rank} could not leave the job cleanly: ${(err as Error).message}\n`);
    } finally {
      guard.stop();
      await job.store.close().catch(() => undefined);
      await job.server?.close().catch(() => undefined);
    }
  }
}

function definedOnly(o: object): Record<string, unknown> {
  return Object.fromEntries(Object.entries(o).filter(([k, v]) => v !== undefined && k in PARALLEL_DEFAULTS));
}
