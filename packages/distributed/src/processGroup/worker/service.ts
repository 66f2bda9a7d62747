/**
 * What the transport's worker thread does: everything a peer's progress may depend on, so that
 * none of it stops while the caller's thread blocks in `synchronize()` (see [Note: the transport
 * thread] in cpuProcessGroup.ts). It hosts the job's store server when asked (rank 0), keeps its
 * own store client (peer addresses are looked up lazily, on a first send), runs the TCP transport
 * and the HostProcessGroup of every group, and watches the job's failure record, so that a failure
 * reported by any rank ends a blocked `synchronize()` at once.
 */
import type { ReduceOp } from "@fulgur/core";
import type { HostArray } from "@fulgur/tensor";
import { failureError, watchForFailures, type FailureWatch } from "../../failure";
import { TcpStore } from "../../store/client";
import { StoreServer } from "../../store/server";
import { createHostProcessGroup, type HostProcessGroup } from "../hostGroup";
import { toRecord } from "./errorCodec";
import {
  settleSlot,
  slotData,
  SlotStatus,
  type GroupInfo,
  type JoinOptions,
  type OpRequest,
  type Reply,
  type ReplyValue,
  type Request,
} from "./protocol";

export class GroupService {
  private server: StoreServer | undefined;
  private store: TcpStore | undefined;
  private watch: FailureWatch | undefined;
  /** Groups by the handle the caller's thread knows them by; 1 is the world group. */
  private readonly groups = new Map<number, HostProcessGroup>();
  private nextGroup = 1;
  /** Slots of operations not settled yet, so a fatal error can still wake their callers. */
  private readonly inFlight = new Map<number, SharedArrayBuffer>();

  constructor(private readonly post: (reply: Reply) => void) {}

  handle(req: Request): void {
    if (req.t === "op") {
      this.run(req);
      return;
    }
    if (req.t === "log") {
      // Any group will do: every group of a transport shares its log.
      this.settle(req.id, req.slot, () => this.groups.values().next().value?.recentCollectives() ?? []);
      return;
    }
    if (req.t === "ping") {
      this.settle(req.id, req.slot, () => undefined);
      return;
    }
    this.answer(req.id, () => this.control(req));
  }

  /** Fails every operation in flight with `err`; for an error this thread cannot survive. */
  failAll(err: unknown): void {
    for (const [id, slot] of this.inFlight) {
      this.post({ t: "reply", id, error: toRecord(err) });
      settleSlot(slot, SlotStatus.Failed);
    }
    this.inFlight.clear();
  }

  private async control(req: Exclude<Request, { t: "op" | "log" | "ping" }>): Promise<ReplyValue> {
    switch (req.t) {
      case "serve":
        this.server = await StoreServer.start({ host: req.host, port: req.port, token: req.token });
        return { port: this.server.port };
      case "closeServer":
        await this.server?.close();
        this.server = undefined;
        return undefined;
      case "join":
        return this.join(req.options);
      case "newGroup": {
        const sub = await this.group(req.group).newGroup(req.ranks);
        return this.register(sub);
      }
      case "destroy": {
        const g = this.group(req.group);
        await g.destroy();
        if (req.group === 1) {
          this.watch?.stop();
          await this.store?.close();
        }
        return undefined;
      }
    }
  }

  private async join(o: JoinOptions): Promise<GroupInfo> {
    this.store = await TcpStore.connect({
      host: o.store.host,
      port: o.store.port,
      token: o.token,
      timeoutMs: o.timeoutMs,
      connectTimeoutMs: Math.min(o.timeoutMs, 60_000),
    });
    const world = await createHostProcessGroup({ ...o, store: this.store });
    if (o.failureKey !== null) {
      this.watch = watchForFailures(this.store, (report) => {
        const err = failureError(report);
        for (const g of this.groups.values()) g.abort(err);
      }, { key: o.failureKey, onStoreLost: () => {} });
    }
    return this.register(world);
  }

  private register(g: HostProcessGroup): GroupInfo {
    const group = this.nextGroup++;
    this.groups.set(group, g);
    return { group, name: g.name, rank: g.rank, size: g.size, ranks: [...g.ranks], globalRank: g.globalRank };
  }

  private group(id: number): HostProcessGroup {
    const g = this.groups.get(id);
    if (!g) throw new Error(`internal: no process group ${id} in the worker`);
    return g;
  }

  /** Issues one operation now (issue order is request order) and writes its result into the slot. */
  private run(req: OpRequest): void {
    this.settle(req.id, req.slot, async () => {
      const g = this.group(req.group);
      const { dtype, numel, arg, tag, shape, slot } = req;
      const data = (start: number, n: number) => slotData(slot, dtype, start, n);
      // Results land in the slot; the caller's thread copies them into its tensors.
      const into = (start: number) => (r: HostArray) => {
        const dst = data(start, r.length);
        if (r.buffer !== dst.buffer || r.byteOffset !== dst.byteOffset) (dst as Float32Array).set(r as Float32Array);
      };
      const issue = (): Promise<unknown> => {
        switch (req.op) {
          case "allReduce":
            return g.allReduce(data(0, numel), dtype, arg as ReduceOp, shape).then(into(0));
          case "broadcast":
            return g.broadcast(data(0, numel), dtype, arg as number, shape).then(into(0));
          case "allGather":
            return g.allGather(data(Math.max(g.rank, 0) * numel, numel), dtype, shape).then(into(0));
          case "reduceScatter":
            return g.reduceScatter(data(0, numel), dtype, arg as ReduceOp, shape).then(into(0));
          case "send":
            return g.send(data(0, numel), dtype, arg as number, tag, shape);
          case "recv":
            return g.recv(dtype, numel, arg as number, tag, shape).then(into(0));
          case "barrier":
            return g.barrier();
        }
      };
      await g.attributedTo(req.callSite, issue);
      return undefined;
    });
  }

  /** Runs `body` for a request answered through a slot; see [Note: reply before status] in protocol.ts. */
  private settle(id: number, slot: SharedArrayBuffer, body: () => ReplyValue | Promise<ReplyValue>): void {
    this.inFlight.set(id, slot);
    const done = (reply: Reply, status: (typeof SlotStatus)["Done" | "Failed"]) => {
      if (!this.inFlight.delete(id)) return;
      this.post(reply);
      settleSlot(slot, status);
    };
    // Called now, not in a later turn: the group numbers collectives in the order they are issued.
    let result: Promise<ReplyValue>;
    try {
      result = Promise.resolve(body());
    } catch (err) {
      result = Promise.reject(err);
    }
    result.then(
        (value) => done({ t: "reply", id, value }, SlotStatus.Done),
        (err: unknown) => done({ t: "reply", id, error: toRecord(err) }, SlotStatus.Failed),
      );
  }

  private answer(id: number, body: () => Promise<ReplyValue>): void {
    body().then(
      (value) => this.post({ t: "reply", id, value }),
      (err: unknown) => this.post({ t: "reply", id, error: toRecord(err) }),
    );
  }
}
