/**
 * NcclProcessGroup: the core ProcessGroup contract over NCCL (DESIGN.md, decisions 1, 7 and 12).
 *
 * - One NCCL communicator per group. Rank 0 of the group creates the unique id and publishes it in
 *   the rendezvous Store; the others read it; all meet at a store barrier right before
 *   ncclCommInitRank so that blocking call only waits for NCCL's own bootstrap.
 * - Collectives run on the group's own stream so they overlap with compute:
 *   an event recorded on the compute stream is waited on by the NCCL stream before the collective
 *   (it sees every op queued before the call; an operand still being uploaded from pinned memory is
 *   waited for too, by this stream alone: [Note: uploads on their own stream] in cudaBackend.ts),
 *   and the collective's completion event is waited on by the compute stream when the Work is
 *   waited (ops queued after `wait()` see its result).
 *   Storages used by a pending collective remember its event, so freeing them early is safe.
 * - `Work.wait()` polls the completion event without blocking the event loop, and a watchdog aborts
 *   the communicator (ncclCommAbort) when a collective has not finished within the timeout,
 *   rejecting with the group, the operation, and the last collectives this rank issued.
 * - `Work.synchronize()` orders instead of waiting; see [Note: synchronize on the device].
 *
 * [Note: synchronize on the device] DESIGN.md decision 14: the compute stream waits on the
 * collective's completion event (cudaStreamWaitEvent), so kernels queued afterwards read its result,
 * and the host goes on at once; a hook that gathers a unit's parameters costs no host round trip.
 * The host learns of failures later: an error already known (the watchdog's abort, an asynchronous
 * NCCL error) is thrown at once; one that comes later reaches the next collective, `wait()` or
 * `isCompleted()`. Works nobody waits for are finished as the group goes on (`reap()`), oldest
 * first, since collectives of one stream complete in issue order. A caveat: the watchdog is a timer
 * of the event loop, so a collective that hangs after `synchronize()` is aborted only while the
 * host is not itself blocked in a device synchronisation (reading a value waits on the compute
 * stream, which waits on the hung collective).
 */
import type { ProcessGroup, ReduceOp, Store, Work } from "@fulgur/core";
import type { DType, Tensor } from "@fulgur/tensor";
import { check, statusError } from "./check";
import type { CudaBackend } from "./cudaBackend";
import { cudaBackend } from "./cudaBackend";
import { CudaEvent } from "./event";
import type { Ptr } from "./ffi/cudart";
import * as N from "./ffi/nccl";
import { isContiguous, numelOf } from "./ops/layout";
import { addressOf, awaitWrite, cudaStorageOf } from "./storage";
import type { CudaStorage } from "./storage";
import { Stream } from "./stream";

export interface NcclProcessGroupOptions {
  readonly store: Store;
  /** This process's rank in the group and the group's size. */
  readonly rank: number;
  readonly size: number;
  /** Global ranks of the members in group-rank order (default 0..size-1). */
  readonly ranks?: readonly number[];
  /** The device this rank uses (default cuda:$LOCAL_RANK). */
  readonly device?: string;
  /** Unique among groups sharing the store: keys are namespaced by it (default "world"). */
  readonly name?: string;
  /** A collective still running after this many ms aborts the communicator (default 10 minutes). */
  readonly timeoutMs?: number;
}

const NCCL_DTYPE: Readonly<Record<DType, number>> = {
  float32: N.ncclFloat32,
  float64: N.ncclFloat64,
  bfloat16: N.ncclBfloat16,
  float16: N.ncclFloat16,
  int32: N.ncclInt32,
};

const NCCL_OP: Readonly<Record<ReduceOp, number>> = { sum: N.ncclSum, avg: N.ncclAvg, max: N.ncclMax, min: N.ncclMin };

/** One line of the recent-collectives record (decision 12: on a timeout, say where this rank is). */
interface Issued {
  readonly seq: number;
  readonly op: string;
  readonly what: string;
  readonly at: number;
}

const HISTORY = 16;

export class NcclTimeoutError extends Error {
  constructor(
    message: string,
    readonly group: string,
    readonly op: string,
  ) {
    super(message);
    this.name = "NcclTimeoutError";
  }
}

class NcclWork implements Work {
  private error: Error | null = null;
  private completed = false;
  private readonly controller = new AbortController();
  private readonly timer: NodeJS.Timeout;
  private waited: Promise<void> | null = null;
  /** Whether the compute stream already waits on `done` (one cudaStreamWaitEvent is enough). */
  private ordered = false;

  constructor(
    private readonly group: NcclProcessGroup,
    readonly issued: Issued,
    private readonly done: CudaEvent,
    private readonly storages: readonly CudaStorage[],
    timeoutMs: number,
  ) {
    // The watchdog runs whether or not anyone waits: a hung collective must not hang the job.
    this.timer = setTimeout(() => this.watchdog(), timeoutMs);
    this.timer.unref();
  }

  private watchdog(): void {
    if (this.completed || this.error) return;
    if (this.pollDone()) return;
    this.fail(this.group.abortForTimeout(this.issued));
  }

  fail(err: Error): void {
    if (this.completed || this.error) return;
    this.error = err;
    clearTimeout(this.timer);
    this.controller.abort(err);
  }

  /** Non-blocking completion check; finishes the work when its event has completed. */
  private pollDone(): boolean {
    if (this.completed) return true;
    if (this.error) return false;
    if (!this.done.query()) return false;
    this.finish();
    return true;
  }

  private finish(): void {
    this.completed = true;
    clearTimeout(this.timer);
    for (const s of this.storages) s.pendingUses = s.pendingUses.filter((e) => e !== this.done);
    this.group.retire(this);
    this.done.destroy();
  }

  isCompleted(): boolean {
    try {
      return this.pollDone();
    } catch (err) {
      this.fail(err as Error);
      return false;
    }
  }

  /** See [Note: synchronize on the device]. */
  synchronize(): void {
    if (this.error) throw this.error;
    if (this.completed) return;
    const asyncError = this.group.asyncError();
    if (asyncError) {
      this.fail(asyncError);
      throw asyncError;
    }
    this.orderCompute();
  }

  /** Compute work queued from now on is ordered after the collective, on the device. */
  private orderCompute(): void {
    if (this.ordered) return;
    this.group.computeStream().waitEvent(this.done);
    this.ordered = true;
  }

  wait(): Promise<void> {
    this.waited ??= this.run();
    return this.waited;
  }

  private async run(): Promise<void> {
    if (this.error) throw this.error;
    if (!this.completed) {
      // Compute work queued after wait() is ordered after the collective on the device.
      this.orderCompute();
      for (;;) {
        const asyncError = this.group.asyncError();
        if (asyncError) {
          this.fail(asyncError);
          throw asyncError;
        }
        try {
          await this.done.wait({ signal: this.controller.signal, maxDelayMs: 8 });
          break;
        } catch (err) {
          if (this.error) throw this.error;
          throw err;
        }
      }
      if (!this.completed) this.finish();
    }
  }
}

export class NcclProcessGroup implements ProcessGroup {
  readonly backend = "nccl";
  readonly ranks: readonly number[];
  private readonly history: Issued[] = [];
  private readonly pending = new Set<NcclWork>();
  private seq = 0;
  private subgroups = 0;
  private aborted: Error | null = null;
  private destroyed = false;
  private barrierBuf: CudaStorage | null = null;

  private constructor(
    readonly rank: number,
    readonly size: number,
    ranks: readonly number[],
    readonly name: string,
    private readonly device: CudaBackend,
    private readonly comm: Ptr,
    private readonly stream: Stream,
    private readonly store: Store,
    private readonly timeoutMs: number,
  ) {
    this.ranks = Object.freeze([...ranks]);
  }

  /** Creates the communicator; every rank of the group must call it with the same name and size. */
  static async create(options: NcclProcessGroupOptions): Promise<NcclProcessGroup> {
    const { store, rank, size } = options;
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`size: got ${size}; expected a positive integer`);
    if (!Number.isInteger(rank) || rank < 0 || rank >= size) throw new RangeError(`rank: got ${rank}; expected an integer in [0, ${size})`);
    const ranks = options.ranks ?? Array.from({ length: size }, (_, i) => i);
    if (ranks.length !== size) throw new RangeError(`ranks: got ${ranks.length} entries for a group of size ${size}`);
    const name = options.name ?? "world";
    const timeoutMs = options.timeoutMs ?? 600_000;
    if (!(timeoutMs > 0)) throw new RangeError(`timeoutMs: got ${timeoutMs}; expected a positive number of milliseconds`);
    const device = cudaBackend(options.device ?? `cuda:${process.env.LOCAL_RANK ?? 0}`);
    const ctx = device.ctx;
    const nccl = N.nccl();
    const key = `fulgur/nccl/${name}/unique-id`;
    let id: Uint8Array;
    if (rank === 0) {
      const out: Partial<N.NcclUniqueId> = {};
      check(nccl.ncclGetUniqueId(out), "ncclGetUniqueId", "nccl", `group "${name}"`);
      id = new Uint8Array(out.internal!);
      await store.set(key, id);
    } else {
      id = await store.get(key, timeoutMs);
    }
    if (id.length !== N.NCCL_UNIQUE_ID_BYTES) {
      throw new Error(`group "${name}": the NCCL unique id in the store has ${id.length} bytes; expected ${N.NCCL_UNIQUE_ID_BYTES}`);
    }
    // Everyone arrives before anyone enters the blocking init, so it never waits on a rank that is
    // still starting up; a rank that never comes makes this store wait time out with its name.
    await store.set(`fulgur/nccl/${name}/ready/${rank}`, "1");
    await store.wait(
      ranks.map((_, r) => `fulgur/nccl/${name}/ready/${r}`),
      timeoutMs,
    );
    ctx.makeCurrent();
    const comm: [Ptr | null] = [null];
    check(nccl.ncclCommInitRank(comm, size, { internal: id }, rank), "ncclCommInitRank", "nccl", `group "${name}" rank ${rank} of ${size}`);
    const stream = Stream.create(device.index, `NCCL stream of group "${name}"`);
    return new NcclProcessGroup(rank, size, ranks, name, device, comm[0]!, stream, store, timeoutMs);
  }

  /** @internal */
  computeStream(): Stream {
    return this.device.ctx.compute;
  }

  /** @internal An asynchronous NCCL error (a peer failed), as an exception, or null. */
  asyncError(): Error | null {
    if (this.aborted) return this.aborted;
    const out: [number] = [0];
    const code = N.nccl().ncclCommGetAsyncError(this.comm, out);
    if (code !== 0) return statusError(code, "ncclCommGetAsyncError", "nccl", `group "${this.name}"`);
    if (out[0] !== N.ncclSuccess && out[0] !== N.ncclInProgress) {
      const err = statusError(out[0], "NCCL (asynchronous error)", "nccl", `group "${this.name}" rank ${this.rank}`);
      this.abort(err);
      return err;
    }
    return null;
  }

  /** @internal Called by the watchdog: aborts the communicator and explains what was pending. */
  abortForTimeout(issued: Issued): NcclTimeoutError {
    const recent = this.history.map((h) => `#${h.seq} ${h.op}(${h.what})`).join(", ");
    const err = new NcclTimeoutError(
      `NCCL ${issued.op} #${issued.seq} (${issued.what}) on group "${this.name}" (rank ${this.rank} of ${this.size}, ` +
        `global rank ${this.ranks[this.rank]}) did not finish within ${this.timeoutMs} ms; the communicator was aborted. ` +
        `A peer probably did not issue the same collective. This rank's recent collectives: ${recent}`,
      this.name,
      issued.op,
    );
    this.abort(err);
    return err;
  }

  private abort(err: Error): void {
    if (this.aborted) return;
    this.aborted = err;
    N.nccl().ncclCommAbort(this.comm);
    for (const w of [...this.pending]) w.fail(err);
  }

  /** @internal */
  retire(w: NcclWork): void {
    this.pending.delete(w);
  }

  /** Finishes the works whose collectives are done, oldest first; see [Note: synchronize on the device]. */
  private reap(): void {
    for (const w of this.pending) if (!w.isCompleted()) return;
  }

  private usable(): void {
    if (this.destroyed) throw new Error(`process group "${this.name}" was destroyed`);
    if (this.aborted) throw new Error(`process group "${this.name}" was aborted: ${this.aborted.message}`);
  }

  private tensorArg(t: Tensor, op: string, role: string): { ptr: Ptr; count: number; dtype: number; storage: CudaStorage } {
    const storage = cudaStorageOf(t, this.device);
    if (!isContiguous(t.shape, t.strides)) {
      throw new TypeError(`${op}: ${role} [${t.shape.join(", ")}] must be contiguous; call .contiguous() first`);
    }
    return { ptr: addressOf(t, this.device), count: numelOf(t.shape), dtype: NCCL_DTYPE[storage.dtype], storage };
  }

  private peer(r: number, what: string): number {
    if (!Number.isInteger(r) || r < 0 || r >= this.size) throw new RangeError(`${what}: got ${r}; expected a group rank in [0, ${this.size})`);
    return r;
  }

  /** Orders the collective after compute, runs `call` on the NCCL stream, returns its Work. */
  private enqueue(op: string, what: string, storages: CudaStorage[], call: (stream: Ptr) => number, callName: string): Work {
    this.usable();
    this.reap();
    const ctx = this.device.ctx;
    const ready = CudaEvent.create(false).record(ctx.compute);
    this.stream.waitEvent(ready);
    ready.destroy();
    // An operand still being uploaded on another stream: this stream waits, compute does not.
    for (const s of storages) if (s.pendingWrite !== null) awaitWrite(s, this.stream);
    const code = call(this.stream.handle);
    if (code !== 0 && code !== N.ncclInProgress) throw statusError(code, callName, "nccl", `${op} on group "${this.name}"`);
    const done = CudaEvent.create(false).record(this.stream);
    for (const s of storages) s.pendingUses.push(done);
    const issued: Issued = { seq: ++this.seq, op, what, at: Date.now() };
    this.history.push(issued);
    if (this.history.length > HISTORY) this.history.shift();
    const w = new NcclWork(this, issued, done, storages, this.timeoutMs);
    this.pending.add(w);
    return w;
  }

  allReduce(tensor: Tensor, op: ReduceOp = "sum"): Work {
    const t = this.tensorArg(tensor, "allReduce", "tensor");
    const red = NCCL_OP[op];
    if (red === undefined) throw new TypeError(`allReduce: op ${JSON.stringify(op)}; expected sum, avg, max or min`);
    return this.enqueue("allReduce", `${op} ${t.count} ${t.storage.dtype}`, [t.storage], (s) => N.nccl().ncclAllReduce(t.ptr, t.ptr, t.count, t.dtype, red, this.comm, s), "ncclAllReduce");
  }

  broadcast(tensor: Tensor, src: number): Work {
    const t = this.tensorArg(tensor, "broadcast", "tensor");
    const root = this.peer(src, "broadcast src");
    return this.enqueue("broadcast", `from ${root}, ${t.count} ${t.storage.dtype}`, [t.storage], (s) => N.nccl().ncclBroadcast(t.ptr, t.ptr, t.count, t.dtype, root, this.comm, s), "ncclBroadcast");
  }

  allGather(output: Tensor, input: Tensor): Work {
    const o = this.tensorArg(output, "allGather", "output");
    const i = this.tensorArg(input, "allGather", "input");
    if (o.count !== i.count * this.size) throw new RangeError(`allGather: output has ${o.count} elements; expected size * input = ${this.size} * ${i.count}`);
    if (o.storage.dtype !== i.storage.dtype) throw new TypeError(`allGather: output is ${o.storage.dtype} but input is ${i.storage.dtype}`);
    return this.enqueue("allGather", `${i.count} ${i.storage.dtype} each`, [o.storage, i.storage], (s) => N.nccl().ncclAllGather(i.ptr, o.ptr, i.count, i.dtype, this.comm, s), "ncclAllGather");
  }

  reduceScatter(output: Tensor, input: Tensor, op: ReduceOp = "sum"): Work {
    const o = this.tensorArg(output, "reduceScatter", "output");
    const i = this.tensorArg(input, "reduceScatter", "input");
    if (i.count !== o.count * this.size) throw new RangeError(`reduceScatter: input has ${i.count} elements; expected size * output = ${this.size} * ${o.count}`);
    if (o.storage.dtype !== i.storage.dtype) throw new TypeError(`reduceScatter: output is ${o.storage.dtype} but input is ${i.storage.dtype}`);
    const red = NCCL_OP[op];
    if (red === undefined) throw new TypeError(`reduceScatter: op ${JSON.stringify(op)}; expected sum, avg, max or min`);
    return this.enqueue("reduceScatter", `${op} ${o.count} ${o.storage.dtype} each`, [o.storage, i.storage], (s) => N.nccl().ncclReduceScatter(i.ptr, o.ptr, o.count, o.dtype, red, this.comm, s), "ncclReduceScatter");
  }

  /** NCCL matches point-to-point messages by order between a pair of ranks; `tag` is not used. */
  send(tensor: Tensor, dst: number, _tag?: number): Work {
    const t = this.tensorArg(tensor, "send", "tensor");
    const peer = this.peer(dst, "send dst");
    return this.enqueue("send", `to ${peer}, ${t.count} ${t.storage.dtype}`, [t.storage], (s) => N.nccl().ncclSend(t.ptr, t.count, t.dtype, peer, this.comm, s), "ncclSend");
  }

  recv(tensor: Tensor, src: number, _tag?: number): Work {
    const t = this.tensorArg(tensor, "recv", "tensor");
    const peer = this.peer(src, "recv src");
    return this.enqueue("recv", `from ${peer}, ${t.count} ${t.storage.dtype}`, [t.storage], (s) => N.nccl().ncclRecv(t.ptr, t.count, t.dtype, peer, this.comm, s), "ncclRecv");
  }

  /** An all-reduce of one float on the device: completes when every rank has reached it. */
  barrier(): Work {
    this.usable();
    this.barrierBuf ??= this.device.alloc("float32", 1);
    const buf = this.barrierBuf;
    return this.enqueue("barrier", "1 float32", [buf], (s) => N.nccl().ncclAllReduce(buf.ptr, buf.ptr, 1, N.ncclFloat32, N.ncclSum, this.comm, s), "ncclAllReduce");
  }

  async newGroup(ranks: readonly number[]): Promise<ProcessGroup> {
    this.usable();
    const seen = new Set<number>();
    for (const r of ranks) {
      this.peer(r, "newGroup ranks");
      if (seen.has(r)) throw new RangeError(`newGroup: rank ${r} is listed twice`);
      seen.add(r);
    }
    const name = `${this.name}/${++this.subgroups}`;
    const me = ranks.indexOf(this.rank);
    const global = ranks.map((r) => this.ranks[r]);
    if (me < 0) return new NonMemberGroup(name, global, this.rank);
    return NcclProcessGroup.create({
      store: this.store,
      rank: me,
      size: ranks.length,
      ranks: global,
      device: this.device.device,
      name,
      timeoutMs: this.timeoutMs,
    });
  }

  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    if (!this.aborted) {
      await Promise.allSettled([...this.pending].map((w) => w.wait()));
      check(N.nccl().ncclCommDestroy(this.comm), "ncclCommDestroy", "nccl", `group "${this.name}"`);
    }
    if (this.barrierBuf) this.device.free(this.barrierBuf);
    this.stream.destroy();
  }
}

/** What newGroup returns on a rank left out of the new group: every operation says so. */
class NonMemberGroup implements ProcessGroup {
  readonly backend = "nccl";
  readonly rank = -1;
  readonly size: number;

  constructor(
    private readonly name: string,
    readonly ranks: readonly number[],
    private readonly parentRank: number,
  ) {
    this.size = ranks.length;
  }

  private refuse(op: string): never {
    throw new Error(`${op}: this process (rank ${this.parentRank} of the parent group) is not a member of group "${this.name}" (global ranks ${this.ranks.join(", ")})`);
  }

  allReduce(): Work {
    return this.refuse("allReduce");
  }
  broadcast(): Work {
    return this.refuse("broadcast");
  }
  allGather(): Work {
    return this.refuse("allGather");
  }
  reduceScatter(): Work {
    return this.refuse("reduceScatter");
  }
  send(): Work {
    return this.refuse("send");
  }
  recv(): Work {
    return this.refuse("recv");
  }
  barrier(): Work {
    return this.refuse("barrier");
  }
  async newGroup(): Promise<ProcessGroup> {
    return this.refuse("newGroup");
  }
  async destroy(): Promise<void> {}
}
