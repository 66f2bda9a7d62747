/**
 * The CPU process group: the ProcessGroup contract of @fulgur/core over TCP, for tensors (of the
 * CPU, or of any device through the host: DESIGN.md decision 16). A proxy on the caller's thread
 * in front of a worker thread that runs the transport and the HostProcessGroup.
 *
 * [Note: the transport thread] `Work.synchronize()` (decision 14) must block the caller until a
 * collective's result is in its tensors, because forward and backward hooks are synchronous and
 * cannot await. A thread blocked in Atomics.wait runs no event loop, so nothing a peer's progress
 * depends on may live there: the sockets, the store server rank 0 hosts, the store client that
 * looks peers' addresses up (lazily, on a first send), and the watch on the job's failure record.
 * All of it runs in one worker thread per world group (sub-groups share it); the caller's thread
 * keeps only its own store client, for its failure channel. At call time the inputs are copied into
 * shared memory (tensorIO.ts: one copy), so the caller may go on computing, as with a GPU stream;
 * the request is posted in issue order; the worker runs the collective and sets the slot's status
 * word; the caller's thread copies the result into its tensors when the Work settles, through
 * `synchronize()` (blocking), `wait()` (a promise) or `isCompleted()` (a poll).
 */
import type { ProcessGroup, ReduceOp, Store, Work } from "@fulgur/core";
import type { DType, Tensor } from "@fulgur/tensor";
import { DistributedArgumentError } from "../errors";
import { FAILURE_KEY } from "../failure";
import { checkTimeout } from "../util/timers";
import { checkGroupRank, checkMember, checkPeer, checkReduceOp, checkTag, DTYPE_BYTES, type GroupIdentity } from "./checks";
import { callSite, type CollectiveRecord } from "./collectiveLog";
import { checkWorld, DEFAULT_TIMEOUT_MS, type CreateHostGroupOptions } from "./hostGroup";
import { readTensor, writeTensor } from "./tensorIO";
import { ThreadWork } from "./threadWork";
import { allocSlot, slotData, type GroupInfo, type OpName } from "./worker/protocol";
import { GroupThread } from "./worker/thread";

export interface CpuProcessGroupOptions extends CreateHostGroupOptions {
  /**
   * The store key of the job's failure record (see failure.ts), watched by the transport thread so
   * that a failure reported by any rank fails pending collectives at once, even under a blocked
   * `synchronize()`; null to not watch. Default "fulgur/failure".
   */
  readonly failureKey?: string | null;
}

/**
 * Creates the world CPU process group of this rank, with its transport thread. `store` must be a
 * TcpStore (or anything with its `host` and `port`): the thread opens its own connection to it.
 */
export async function createCpuProcessGroup(options: CpuProcessGroupOptions): Promise<CpuProcessGroup> {
  checkWorld(options.rank, options.size);
  storeAddress(options.store);
  const thread = GroupThread.start();
  try {
    return await CpuProcessGroup.join(thread, options);
  } catch (err) {
    await thread.stop();
    throw err;
  }
}

export class CpuProcessGroup implements ProcessGroup, GroupIdentity {
  readonly backend = "tcp";
  readonly name: string;
  readonly rank: number;
  readonly size: number;
  readonly ranks: readonly number[];
  /** This process's rank in the job. */
  readonly globalRank: number;
  /** The worker's handle for this group. */
  private readonly group: number;
  private destroyed = false;

  private constructor(
    private readonly thread: GroupThread,
    info: GroupInfo,
    private readonly timeoutMs: number,
    /** The world group owns the thread's transport; sub-groups share it. */
    private readonly world: boolean,
  ) {
    this.group = info.group;
    this.name = info.name;
    this.rank = info.rank;
    this.size = info.size;
    this.ranks = Object.freeze([...info.ranks]);
    this.globalRank = info.globalRank;
  }

  /** @internal The world group, in a transport thread that may also host the store server (initProcessGroup). */
  static async join(thread: GroupThread, options: CpuProcessGroupOptions): Promise<CpuProcessGroup> {
    const { rank, size } = options;
    checkWorld(rank, size);
    const timeoutMs = checkTimeout(options.timeoutMs ?? DEFAULT_TIMEOUT_MS, "timeoutMs");
    const info = (await thread.request({
      t: "join",
      options: {
        store: storeAddress(options.store),
        token: options.token ?? process.env.FULGUR_STORE_TOKEN ?? "",
        rank,
        size,
        name: options.name ?? "default",
        host: options.host,
        timeoutMs,
        smallTensorBytes: options.smallTensorBytes,
        failureKey: options.failureKey === undefined ? FAILURE_KEY : options.failureKey,
      },
    })) as GroupInfo;
    thread.retain();
    return new CpuProcessGroup(thread, info, timeoutMs, true);
  }

  allReduce(tensor: Tensor, op: ReduceOp = "sum"): Work {
    checkReduceOp("allReduce", op);
    checkMember(this, "allReduce");
    const n = tensor.numel;
    return this.issue("allReduce", tensor.dtype, n, op, 0, tensor.shape, n, [tensor, 0], [tensor, 0, n]);
  }

  broadcast(tensor: Tensor, src: number): Work {
    checkGroupRank(this, "broadcast src", src);
    checkMember(this, "broadcast");
    const n = tensor.numel;
    // Receivers only send their size; reading their tensor would cost a device sync for nothing.
    const mine = src === this.rank;
    return this.issue("broadcast", tensor.dtype, n, src, 0, tensor.shape, n, mine ? [tensor, 0] : undefined, mine ? undefined : [tensor, 0, n]);
  }

  allGather(output: Tensor, input: Tensor): Work {
    sameDtype("allGather", output, input);
    if (output.numel !== input.numel * this.size) {
      throw new DistributedArgumentError(
        `allGather output: shape [${output.shape}] has ${output.numel} elements; expected ${this.size} × ${input.numel} ` +
          `(group size × input [${input.shape}])`,
      );
    }
    checkMember(this, "allGather");
    const m = input.numel;
    return this.issue("allGather", input.dtype, m, "", 0, input.shape, m * this.size, [input, this.rank * m], [output, 0, m * this.size]);
  }

  reduceScatter(output: Tensor, input: Tensor, op: ReduceOp = "sum"): Work {
    sameDtype("reduceScatter", output, input);
    if (input.numel !== output.numel * this.size) {
      throw new DistributedArgumentError(
        `reduceScatter input: shape [${input.shape}] has ${input.numel} elements; expected ${this.size} × ${output.numel} ` +
          `(group size × output [${output.shape}])`,
      );
    }
    checkReduceOp("reduceScatter", op);
    checkMember(this, "reduceScatter");
    const n = input.numel;
    return this.issue("reduceScatter", input.dtype, n, op, 0, input.shape, n, [input, 0], [output, 0, output.numel]);
  }

  send(tensor: Tensor, dst: number, tag = 0): Work {
    checkPeer(this, "send dst", dst);
    checkTag(tag);
    const n = tensor.numel;
    return this.issue("send", tensor.dtype, n, dst, tag, tensor.shape, n, [tensor, 0], undefined);
  }

  recv(tensor: Tensor, src: number, tag = 0): Work {
    checkPeer(this, "recv src", src);
    checkTag(tag);
    const n = tensor.numel;
    return this.issue("recv", tensor.dtype, n, src, tag, tensor.shape, n, undefined, [tensor, 0, n]);
  }

  barrier(): Work {
    checkMember(this, "barrier");
    return this.issue("barrier", "float32", 0, "", 0, [], 0, undefined, undefined);
  }

  /** A sub-group of these group ranks, sharing this group's transport thread; see HostProcessGroup.newGroup. */
  async newGroup(ranks: readonly number[]): Promise<CpuProcessGroup> {
    const info = (await this.thread.request({ t: "newGroup", group: this.group, ranks })) as GroupInfo;
    return new CpuProcessGroup(this.thread, info, this.timeoutMs, false);
  }

  /** The last ~64 collectives this rank issued (op, shape, dtype, seq, call site, state), oldest first. */
  recentCollectives(): CollectiveRecord[] {
    return this.thread.recentCollectives(this.timeoutMs);
  }

  /** Ends the group: pending operations fail; the world group also closes this rank's connections and its thread. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    // A thread that is already gone has nothing left to close.
    await this.thread.request({ t: "destroy", group: this.group }).catch(() => undefined);
    if (this.world) await this.thread.release();
  }

  /**
   * Copies the input in, posts the operation and returns its Work. `input` is [tensor, first slot
   * element]; `output` is [tensor, first slot element, element count]; see OpRequest for layouts.
   */
  private issue(
    op: OpName,
    dtype: DType,
    numel: number,
    arg: string | number,
    tag: number,
    shape: readonly number[],
    slotElements: number,
    input: readonly [Tensor, number] | undefined,
    output: readonly [Tensor, number, number] | undefined,
  ): Work {
    // Taken here, on the caller's thread, where the user's stack is; the log lives in the worker.
    const site = callSite();
    const slot = allocSlot(slotElements * DTYPE_BYTES[dtype]);
    if (input) readTensor(input[0], slotData(slot, dtype, input[1], input[0].numel));
    const writeBack = () => {
      if (output) writeTensor(output[0], slotData(slot, dtype, output[1], output[2]));
    };
    const work = new ThreadWork(this.thread, slot, this.timeoutMs, writeBack);
    this.thread.send({ t: "op", group: this.group, op, dtype, numel, arg, tag, shape: [...shape], callSite: site, slot }, work.settle);
    return work;
  }
}

/** Where the transport thread connects its own store client: the store's address. */
function storeAddress(store: Store): { host: string; port: number } {
  const { host, port } = store as { host?: unknown; port?: unknown };
  if (typeof host !== "string" || typeof port !== "number") {
    throw new DistributedArgumentError(
      `store: the CPU process group runs its transport in a worker thread, which opens its own connection to the store; ` +
        `it needs a TcpStore (an object with the store's host and port), got ${store?.constructor?.name ?? typeof store}`,
    );
  }
  return { host, port };
}

function sameDtype(op: string, output: Tensor, input: Tensor): void {
  if (output.dtype !== input.dtype) {
    throw new DistributedArgumentError(`${op}: output dtype ${output.dtype} differs from input dtype ${input.dtype}`);
  }
}
