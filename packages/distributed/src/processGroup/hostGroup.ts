/**
 * A process group on host arrays: every collective of the ProcessGroup contract, with what makes
 * collectives safe to use in a job rather than just correct — issue-order queues, sequence numbers
 * checked on every message, timeouts that name op, group, rank and sequence number, failures
 * passed on to every member, and the log of recent collectives (DESIGN.md decisions 7 and 12).
 * The tensor-facing `CpuProcessGroup` is a thin adapter over this class.
 *
 * [Note: matching collectives] Collectives of one group run one at a time in issue order, and each
 * is numbered. Every message carries (seq, op, dtype, element count, op argument, step); a receiver
 * compares them with its own before using the payload, so a rank that called allReduce while its
 * peer called broadcast, or with another size, fails at the first message instead of hanging. The
 * rank that notices tells every member (an abort), so the ones that did not notice fail too.
 *
 * [Note: a lost member] A rank waiting for data from a member whose process died fails at once
 * with a PeerLostError (see [Note: noticing a dead peer] in tcpTransport.ts). The abort it then
 * sends names the lost member, and the members that hear it fail with a PeerLostError naming it
 * too, so a rank blocked waiting for another, live member (in a ring, its other neighbour) ends
 * promptly as well, and every member reports the same dead rank whichever noticed first. A rank
 * blocked in `synchronize()` cannot watch the failure channel: this is what ends its wait. Running
 * collectives are not failed merely because a member left: a member that finished its part and
 * destroyed its group has done nothing wrong.
 */
import type { ReduceOp, Store } from "@fulgur/core";
import type { DType, HostArray } from "@fulgur/tensor";
import {
  CollectiveMismatchError,
  CollectiveTimeoutError,
  DistributedArgumentError,
  GroupAbortedError,
  GroupFailedError,
  PeerLostError,
  type CollectiveContext,
} from "../errors";
import { armTimer, checkTimeout } from "../util/timers";
import {
  checkArray,
  checkDType,
  checkGroupRank,
  checkMember,
  checkNumel,
  checkPeer,
  checkReduceOp,
  checkTag,
  DTYPE_BYTES,
  type GroupIdentity,
} from "./checks";
import { CollectiveLog, type CollectiveRecord } from "./collectiveLog";
import { allGather, barrier, broadcast, directAllReduce, reduceScatter, ringAllReduce, type Link } from "./ring";
import { asBytes, fromBytes, storageKind } from "./reduce";
import { TcpTransport, type Meta } from "./tcpTransport";

export const DEFAULT_TIMEOUT_MS = 30 * 60 * 1000;
/** Below this many bytes a collective takes the one-round direct path instead of the ring. */
export const DEFAULT_SMALL_TENSOR_BYTES = 64 * 1024;

export interface HostGroupOptions {
  /** Longest any collective or send/recv may wait, in ms (default 30 minutes). */
  readonly timeoutMs?: number;
  /** Collectives on fewer bytes use direct exchanges instead of the ring (default 64 KiB); must agree on every rank. */
  readonly smallTensorBytes?: number;
}

export interface CreateHostGroupOptions extends HostGroupOptions {
  readonly store: Store;
  readonly rank: number;
  readonly size: number;
  /** Names the group in store keys and errors; unique per job (default "default"). */
  readonly name?: string;
  /** Address to listen on; default: the interface the store connection uses. */
  readonly host?: string;
  /** The job's token (default FULGUR_STORE_TOKEN or ""). */
  readonly token?: string;
}

/** Checks a world group's rank and size. */
export function checkWorld(rank: number, size: number): void {
  if (!Number.isInteger(size) || size < 1) {
    throw new DistributedArgumentError(`size: got ${JSON.stringify(size)}; expected a positive integer (the world size)`);
  }
  if (!Number.isInteger(rank) || rank < 0 || rank >= size) {
    throw new DistributedArgumentError(`rank: got ${JSON.stringify(rank)}; expected an integer from 0 to ${size - 1}`);
  }
}

/** The world group: opens this rank's transport, publishes its address and returns the group. */
export async function createHostProcessGroup(options: CreateHostGroupOptions): Promise<HostProcessGroup> {
  const { store, rank, size } = options;
  checkWorld(rank, size);
  const name = options.name ?? "default";
  const timeoutMs = checkTimeout(options.timeoutMs ?? DEFAULT_TIMEOUT_MS, "timeoutMs");
  const transport = await TcpTransport.create({
    store,
    rank,
    size,
    name,
    host: options.host,
    token: options.token ?? process.env.FULGUR_STORE_TOKEN ?? "",
    timeoutMs,
  });
  const ranks = Array.from({ length: size }, (_, i) => i);
  return new HostProcessGroup(transport, name, ranks, new CollectiveLog(), { ...options, timeoutMs }, true);
}

export class HostProcessGroup implements GroupIdentity {
  /** This rank's place in the group, or -1 when this process is not a member. */
  readonly rank: number;
  readonly size: number;
  private seq = 0;
  /** The per-group queue: each collective starts when the one issued before it has settled. */
  private tail: Promise<unknown> = Promise.resolve();
  /** The first failure; once set, every later operation rejects with it as cause. */
  private failure: Error | undefined;
  /** One per operation in flight (the running collective, pending sends and receives): aborted on a peer's abort or destroy. */
  private readonly active = new Set<AbortController>();
  private destroyed = false;
  /** Numbers the sends and receives per (peer, tag), for logs and error messages. */
  private readonly p2pCounts = new Map<string, number>();
  /** How many groups of each member list this group made, to name sub-groups alike on every rank. */
  private readonly subgroupCounts = new Map<string, number>();
  private readonly timeoutMs: number;
  private readonly smallBytes: number;

  constructor(
    private readonly transport: TcpTransport,
    readonly name: string,
    /** Global ranks of the members, in group-rank order. */
    readonly ranks: readonly number[],
    private readonly log: CollectiveLog,
    options: HostGroupOptions,
    private readonly ownsTransport: boolean,
  ) {
    this.rank = ranks.indexOf(transport.rank);
    this.size = ranks.length;
    this.timeoutMs = checkTimeout(options.timeoutMs ?? DEFAULT_TIMEOUT_MS, "timeoutMs");
    this.smallBytes = options.smallTensorBytes ?? DEFAULT_SMALL_TENSOR_BYTES;
    if (this.rank >= 0) {
      // See [Note: a lost member].
      transport.onAbort(name, (from, reason, lost) =>
        this.abort(
          lost === undefined
            ? new GroupAbortedError(name, from, reason)
            : new PeerLostError(lost, `${reason} (noticed by global rank ${from}, which aborted group "${name}")`),
        ),
      );
    }
  }

  get globalRank(): number {
    return this.transport.rank;
  }

  /** The last collectives this rank issued on any group sharing its transport, oldest first. */
  recentCollectives(): CollectiveRecord[] {
    return this.log.snapshot();
  }

  /**
   * Fails the group with `err`: running operations reject with it, later ones with a
   * GroupFailedError naming it. For failures learnt elsewhere (another rank's report in the store).
   */
  abort(err: Error): void {
    this.failure ??= err;
    for (const c of this.active) c.abort(err);
  }

  /** Runs `issue` (one call of this group) with `site` as the call site its log record names. */
  attributedTo<T>(site: string, issue: () => T): T {
    return this.log.attributedTo(site, issue);
  }

  allReduce(data: HostArray, dtype: DType, op: ReduceOp = "sum", shape?: readonly number[]): Promise<HostArray> {
    checkReduceOp("allReduce", op);
    checkArray("allReduce", data, dtype);
    const bytes = data.length * DTYPE_BYTES[dtype];
    return this.collective("allReduce", dtype, data.length, op, shape, (link) =>
      this.size === 1 || bytes > this.smallBytes ? ringAllReduce(link, dtype, op, data) : directAllReduce(link, dtype, op, data),
    );
  }

  /** Returns `src`'s data on every rank; on other ranks `data` only gives the expected size. */
  broadcast(data: HostArray, dtype: DType, src: number, shape?: readonly number[]): Promise<HostArray> {
    checkGroupRank(this, "broadcast src", src);
    checkArray("broadcast", data, dtype);
    const bytes = data.length * DTYPE_BYTES[dtype];
    return this.collective("broadcast", dtype, data.length, src, shape, (link) =>
      broadcast(link, dtype, data, src, bytes > this.smallBytes),
    );
  }

  /** Every rank's `input` concatenated in group-rank order. */
  allGather(input: HostArray, dtype: DType, shape?: readonly number[]): Promise<HostArray> {
    checkArray("allGather", input, dtype);
    const bytes = input.length * this.size * DTYPE_BYTES[dtype];
    return this.collective("allGather", dtype, input.length, "", shape, (link) =>
      allGather(link, dtype, input, bytes > this.smallBytes),
    );
  }

  /** `input` holds `size` equal chunks; returns the reduction over ranks of chunk `rank`. */
  reduceScatter(input: HostArray, dtype: DType, op: ReduceOp = "sum", shape?: readonly number[]): Promise<HostArray> {
    checkReduceOp("reduceScatter", op);
    checkArray("reduceScatter", input, dtype);
    if (this.rank >= 0 && input.length % this.size !== 0) {
      throw new DistributedArgumentError(
        `reduceScatter input: ${input.length} elements cannot be split into ${this.size} equal chunks (the group size)`,
      );
    }
    const bytes = input.length * DTYPE_BYTES[dtype];
    return this.collective("reduceScatter", dtype, input.length, op, shape, (link) =>
      reduceScatter(link, dtype, op, input, bytes > this.smallBytes),
    );
  }

  barrier(): Promise<void> {
    return this.collective("barrier", "none", 0, "", [], (link) => barrier(link)).then(() => undefined);
  }

  /** Sends `data` to group rank `dst`; matched with the receiver's recv calls from this rank with the same tag, in order. */
  send(data: HostArray, dtype: DType, dst: number, tag = 0, shape?: readonly number[]): Promise<void> {
    checkPeer(this, "send dst", dst);
    checkTag(tag);
    checkArray("send", data, dtype);
    const k = this.nextP2p(`s${dst}:${tag}`);
    const ctx = this.context("send", k);
    const update = this.log.add({ group: this.name, op: `send(to ${dst}, tag ${tag})`, seq: k, dtype, shape: shape ?? [data.length] });
    const meta: Meta = { d: dtype, n: data.length, k };
    const channel = `p:${this.name}:${tag}`;
    return this.guard(ctx, `group rank ${dst} to accept the data`, update, () =>
      this.transport.send(this.ranks[dst], channel, meta, asBytes(data)),
    );
  }

  /** Receives `numel` elements of `dtype` sent by group rank `src` with `tag`. */
  recv(dtype: DType, numel: number, src: number, tag = 0, shape?: readonly number[]): Promise<HostArray> {
    checkPeer(this, "recv src", src);
    checkTag(tag);
    checkDType("recv", dtype);
    checkNumel(numel);
    const k = this.nextP2p(`r${src}:${tag}`);
    const ctx = this.context("recv", k);
    const update = this.log.add({ group: this.name, op: `recv(from ${src}, tag ${tag})`, seq: k, dtype, shape: shape ?? [numel] });
    const channel = `p:${this.name}:${tag}`;
    return this.guard(ctx, `data from group rank ${src} (tag ${tag})`, update, async (signal) => {
      const msg = await this.transport.receive(this.ranks[src], channel, signal);
      if (msg.meta.d !== dtype || msg.meta.n !== numel) {
        throw new CollectiveMismatchError(ctx, src, `recv of ${numel} ${dtype} elements`, `send of ${msg.meta.n} ${msg.meta.d} elements`);
      }
      return fromBytes(storageKind(dtype), msg.payload);
    });
  }

  /**
   * A sub-group of these group ranks, in the order given. Members must all call it with the same
   * list (and, for several groups of the same members, in the same order); non-members may call
   * it too and get a handle whose operations reject.
   */
  async newGroup(ranks: readonly number[]): Promise<HostProcessGroup> {
    checkMember(this, "newGroup");
    if (!Array.isArray(ranks) || ranks.length === 0) {
      throw new DistributedArgumentError(`newGroup ranks: got ${JSON.stringify(ranks)}; expected a non-empty array of group ranks`);
    }
    for (const r of ranks) checkGroupRank(this, "newGroup ranks", r);
    if (new Set(ranks).size !== ranks.length) {
      throw new DistributedArgumentError(`newGroup ranks: got ${JSON.stringify(ranks)}; each rank may appear once`);
    }
    const id = ranks.join(",");
    const n = this.subgroupCounts.get(id) ?? 0;
    this.subgroupCounts.set(id, n + 1);
    const name = `${this.name}/[${id}]${n === 0 ? "" : `#${n}`}`;
    return new HostProcessGroup(
      this.transport,
      name,
      ranks.map((r) => this.ranks[r]),
      this.log,
      { timeoutMs: this.timeoutMs, smallTensorBytes: this.smallBytes },
      false,
    );
  }

  /** Ends the group: pending operations reject; the world group also closes this rank's connections. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    const err = new GroupFailedError(`group "${this.name}" was destroyed`);
    for (const c of this.active) c.abort(err);
    if (this.ownsTransport) await this.transport.close();
  }

  /** Queues one collective; see [Note: matching collectives]. Bad arguments throw before anything is queued. */
  private collective(
    op: string,
    /** "none" for collectives that carry no data (barrier). */
    dtype: DType | "none",
    numel: number,
    arg: string | number,
    shape: readonly number[] | undefined,
    algorithm: (link: Link) => Promise<HostArray | void>,
  ): Promise<HostArray> {
    checkMember(this, op);
    const seq = ++this.seq;
    const ctx = this.context(op, seq);
    const update = this.log.add({ group: this.name, op: arg === "" ? op : `${op}(${arg})`, seq, dtype, shape: shape ?? [numel] });
    const run = () => {
      const mine: Meta = { s: seq, o: op, d: dtype, n: numel, x: arg };
      let waiting = "the collective to start";
      const channel = `c:${this.name}`;
      return this.guard(
        ctx,
        () => waiting,
        update,
        async (signal) => {
          const link: Link = {
            rank: this.rank,
            size: this.size,
            send: (to, step, payload) => {
              const sent = this.transport.send(this.ranks[to], channel, { ...mine, st: step }, payload);
              // An algorithm that fails on a receive abandons its sends; their later failure is not news.
              sent.catch(() => {});
              return sent;
            },
            recv: async (from, step) => {
              waiting = `data from group rank ${from} (global rank ${this.ranks[from]}) at step ${step}`;
              const msg = await this.transport.receive(this.ranks[from], channel, signal);
              const theirs = msg.meta;
              if (theirs.s !== seq || theirs.o !== op || theirs.d !== dtype || theirs.n !== numel || theirs.x !== arg || theirs.st !== step) {
                throw new CollectiveMismatchError(ctx, from, describe({ ...mine, st: step }), describe(theirs));
              }
              waiting = "the collective to finish";
              return msg.payload;
            },
          };
          return (await algorithm(link)) ?? new Int32Array(0);
        },
        true,
      );
    };
    const result = this.tail.then(run);
    this.tail = result.catch(() => {});
    return result;
  }

  /**
   * Runs one operation under the group's timeout and failure state. A collective's failure
   * (`poisons`) makes the group unusable and is told to every member; a send/recv failure is not.
   */
  private async guard<T>(
    ctx: CollectiveContext,
    waitingFor: string | (() => string),
    update: (state: "running" | "completed" | "failed", error?: unknown) => void,
    body: (signal: AbortSignal) => Promise<T>,
    poisons = false,
  ): Promise<T> {
    if (this.destroyed || this.failure) {
      const cause = this.failure ?? new Error("the group was destroyed");
      const err = new GroupFailedError(`${ctx.op} #${ctx.seq} on group "${this.name}" was not run: ${cause.message}`, { cause });
      update("failed", err);
      throw err;
    }
    update("running");
    const controller = new AbortController();
    this.active.add(controller);
    const aborted = new Promise<never>((_, reject) => {
      controller.signal.addEventListener("abort", () => reject(controller.signal.reason), { once: true });
    });
    aborted.catch(() => {});
    const timer = armTimer(this.timeoutMs, () => {
      const what = typeof waitingFor === "string" ? waitingFor : waitingFor();
      controller.abort(new CollectiveTimeoutError(ctx, this.timeoutMs, what));
    });
    try {
      const value = await Promise.race([body(controller.signal), aborted]);
      update("completed");
      return value;
    } catch (err) {
      update("failed", err);
      controller.abort(err);
      if (poisons && !this.failure && !this.destroyed) {
        this.failure = err as Error;
        // Tell the others before the caller hears of it: a caller that destroys the group at once
        // must not cut the message off (sendAbort is bounded and never throws).
        if (!(err instanceof GroupAbortedError)) {
          const lost = err instanceof PeerLostError ? err.peerGlobalRank : undefined;
          await this.transport.sendAbort(this.ranks, this.name, (err as Error).message, lost);
        }
      }
      throw err;
    } finally {
      if (timer) clearTimeout(timer);
      this.active.delete(controller);
    }
  }

  private context(op: string, seq: number): CollectiveContext {
    return { op, group: this.name, rank: this.rank, globalRank: this.globalRank, seq };
  }

  private nextP2p(key: string): number {
    const k = (this.p2pCounts.get(key) ?? 0) + 1;
    this.p2pCounts.set(key, k);
    return k;
  }

}

function describe(m: Meta): string {
  const arg = m.x === "" || m.x === undefined ? "" : `(${m.x})`;
  return `${m.o}${arg} #${m.s} of ${m.n} ${m.d} elements (step ${m.st})`;
}
