/**
 * Point-to-point messaging between the ranks of a job over TCP: the wire under the CPU process
 * group. Each rank listens on an ephemeral port and publishes `{host, port}` in the store under a
 * key of its group; a rank connects to a peer the first time it sends to it, so a job of N ranks
 * opens at most N·(N-1) one-way connections and none it never uses.
 *
 * Messages carry a channel name. A receiver asks for "the next message from peer P on channel C";
 * messages that arrive before anyone asks wait in that (peer, channel) mailbox. One TCP connection
 * keeps the order of what one peer sent, so per-channel FIFO order is the sender's order: this is
 * what lets collectives match messages by order instead of negotiating.
 *
 * Frame: `u32 length` then `u32 header length`, a JSON header, and the raw payload bytes.
 *
 * [Note: noticing a dead peer] A peer's connections close when its process dies. The connection
 * it sends on tells us first and best (it says goodbye when the peer destroys its group on
 * purpose). The one we send on is consulted only when there is no connection from the peer (a
 * peer this rank sent to but never heard from), and its closing alone proves nothing: a live peer
 * closes it too when it refuses our hello (another job's token). So the peer's listening address is
 * probed: refused means its process is gone. Receives from a lost peer fail at once; see
 * [Note: a lost member] in hostGroup.ts for how the rest of the group hears of it.
 */
import net from "node:net";
import { timingSafeEqual } from "node:crypto";
import type { Store } from "@fulgur/core";
import { PeerLostError } from "../errors";
import { FrameDecoder, MAX_HELLO_BYTES } from "../store/protocol";

/** Per-message metadata a channel's users agree on (sequence numbers, op names, sizes). */
export type Meta = Record<string, string | number | boolean>;

export interface Received {
  readonly meta: Meta;
  readonly payload: Uint8Array;
}

type Header =
  | { t: "hello"; rank: number; token: string }
  | { t: "msg"; ch: string; m: Meta }
  | { t: "abort"; g: string; from: number; reason: string; lost?: number }
  | { t: "bye" };

/** `lostPeer`: the abort is the loss of that global rank, noticed by `fromRank`. */
export type AbortHandler = (fromRank: number, reason: string, lostPeer?: number) => void;

export interface TcpTransportOptions {
  readonly store: Store;
  readonly rank: number;
  readonly size: number;
  /** Namespaces the address keys, so several jobs or groups can share one store. */
  readonly name: string;
  /** Address to listen on and publish; default: the address this node reaches the store through, else 127.0.0.1. */
  readonly host?: string;
  /** The job's token; peers must present it, as store clients must. */
  readonly token: string;
  /** How long to wait for a peer to publish its address. */
  readonly timeoutMs: number;
}

const MAX_MESSAGE_BYTES = 0xffffffff - 1024;

/** One mailbox: messages that arrived before they were asked for, or receivers waiting for a message. */
interface Mailbox {
  readonly queue: Received[];
  readonly waiters: { resolve: (m: Received) => void; reject: (e: Error) => void }[];
}

export class TcpTransport {
  private readonly mailboxes = new Map<string, Mailbox>();
  /** Connections this rank sends on, one per peer, created on first send. */
  private readonly outgoing = new Map<number, Promise<net.Socket>>();
  /** Connections peers send on, by peer once its hello is read; kept to close them on shutdown. */
  private readonly incoming = new Map<net.Socket, number>();
  /** Why a peer can no longer send to us; receives from it fail once its mailbox is drained. */
  private readonly lostPeers = new Map<number, Error>();
  private readonly abortHandlers = new Map<string, AbortHandler>();
  /** Aborts for groups not created here yet (a peer may be faster); delivered on registration. */
  private readonly earlyAborts = new Map<string, { from: number; reason: string; lost?: number }>();
  private closed = false;

  private constructor(
    private readonly options: TcpTransportOptions,
    private readonly server: net.Server,
  ) {}

  get rank(): number {
    return this.options.rank;
  }
  get size(): number {
    return this.options.size;
  }

  static async create(options: TcpTransportOptions): Promise<TcpTransport> {
    const host = options.host ?? defaultHost(options.store);
    const server = net.createServer();
    const transport = new TcpTransport(options, server);
    server.on("connection", (s) => transport.accept(s));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen({ host, port: 0 }, () => {
        server.off("error", reject);
        resolve();
      });
    });
    server.on("error", () => {});
    const { port } = server.address() as net.AddressInfo;
    await options.store.set(addressKey(options.name, options.rank), JSON.stringify({ host, port }));
    return transport;
  }

  /**
   * Sends one message. Resolves once the bytes are handed to the kernel; the caller must not modify
   * `payload` before then (it is written without a copy).
   */
  async send(peer: number, channel: string, meta: Meta, payload: Uint8Array = new Uint8Array(0)): Promise<void> {
    if (this.closed) throw new Error(`send to global rank ${peer}: the transport was closed (group destroyed)`);
    if (payload.byteLength > MAX_MESSAGE_BYTES) {
      throw new RangeError(`send to global rank ${peer}: ${payload.byteLength} bytes exceeds the 4 GiB limit of one message`);
    }
    const socket = await this.connection(peer);
    await writeFrame(socket, { t: "msg", ch: channel, m: meta }, payload).catch((err: Error) => {
      throw new PeerLostError(peer, `sending to global rank ${peer} failed: ${err.message} (its process probably exited)`);
    });
  }

  /** The next message from `peer` on `channel`; rejects with the signal's reason when aborted. */
  receive(peer: number, channel: string, signal?: AbortSignal): Promise<Received> {
    const box = this.mailbox(peer, channel);
    const ready = box.queue.shift();
    if (ready) return Promise.resolve(ready);
    const lost = this.lostPeers.get(peer);
    if (lost) return Promise.reject(lost);
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise<Received>((resolve, reject) => {
      const waiter = {
        resolve: (m: Received) => {
          signal?.removeEventListener("abort", onAbort);
          resolve(m);
        },
        reject: (e: Error) => {
          signal?.removeEventListener("abort", onAbort);
          reject(e);
        },
      };
      const onAbort = () => {
        const i = box.waiters.indexOf(waiter);
        if (i >= 0) box.waiters.splice(i, 1);
        reject(signal!.reason);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      box.waiters.push(waiter);
    });
  }

  /** Registers the handler for aborts of `group` sent by peers (at most one per group). */
  onAbort(group: string, handler: AbortHandler): void {
    this.abortHandlers.set(group, handler);
    const early = this.earlyAborts.get(group);
    if (early) {
      this.earlyAborts.delete(group);
      handler(early.from, early.reason, early.lost);
    }
  }

  /** Tells `peers` that `group` failed here (through the loss of `lostPeer`, if given); best effort, never throws. */
  async sendAbort(peers: readonly number[], group: string, reason: string, lostPeer?: number): Promise<void> {
    await Promise.all(
      peers
        .filter((p) => p !== this.rank)
        .map(async (p) => {
          try {
            const socket = await withTimeout(this.connection(p), 2_000);
            // Bounded too: a stuck peer that stopped reading must not hold up the failure here.
            await withTimeout(writeFrame(socket, { t: "abort", g: group, from: this.rank, reason, lost: lostPeer }, new Uint8Array(0)), 2_000);
          } catch {
            // The peer may be the one that is gone; the others still hear about it.
          }
        }),
    );
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // A connection still being set up (its peer never published an address) is not waited for.
    const outs = await Promise.allSettled([...this.outgoing.values()].map((p) => withTimeout(p, 1_000)));
    await Promise.all(
      outs.map(async (o) => {
        if (o.status !== "fulfilled" || o.value.destroyed) return;
        const socket = o.value;
        await withTimeout(writeFrame(socket, { t: "bye" }, new Uint8Array(0)), 1_000).catch(() => {});
        socket.end();
      }),
    );
    for (const s of this.incoming.keys()) s.destroy();
    const reason = new Error("the transport was closed (group destroyed)");
    for (let peer = 0; peer < this.size; peer++) if (peer !== this.rank) this.markLost(peer, reason);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private mailbox(peer: number, channel: string): Mailbox {
    const key = `${peer}\u0000${channel}`;
    let box = this.mailboxes.get(key);
    if (!box) {
      box = { queue: [], waiters: [] };
      this.mailboxes.set(key, box);
    }
    return box;
  }

  private connection(peer: number): Promise<net.Socket> {
    let pending = this.outgoing.get(peer);
    if (!pending) {
      pending = this.connect(peer);
      this.outgoing.set(peer, pending);
      // A failed connect is remembered (the peer is gone), but must not be an unhandled rejection.
      pending.catch(() => {});
    }
    return pending;
  }

  private async connect(peer: number): Promise<net.Socket> {
    const { store, name, timeoutMs, token, rank } = this.options;
    const raw = await store.get(addressKey(name, peer), timeoutMs);
    const { host, port } = JSON.parse(new TextDecoder().decode(raw)) as { host: string; port: number };
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ host, port });
      s.once("connect", () => {
        s.off("error", reject);
        resolve(s);
      });
      s.once("error", (err) =>
        reject(new PeerLostError(peer, `cannot connect to global rank ${peer} at ${host}:${port}: ${err.message}`)),
      );
    });
    if (this.closed) {
      socket.destroy();
      throw new Error(`connection to global rank ${peer} finished after the transport was closed`);
    }
    socket.setNoDelay(true);
    socket.on("error", () => {});
    // Nothing is ever read on an outgoing connection; a close tells us the peer went away.
    socket.resume();
    socket.on("close", () => {
      // See [Note: noticing a dead peer]: a connection from the peer will say why, if there is one.
      if (this.closed || [...this.incoming.values()].includes(peer)) return;
      void isListening(host, port).then((alive) => {
        if (alive || this.closed || [...this.incoming.values()].includes(peer)) return;
        const why = "nothing listens at its address any more (its process exited or crashed, or it destroyed its process group)";
        this.markLost(peer, new PeerLostError(peer, `the connection to global rank ${peer} closed and ${why}`));
      });
    });
    await writeFrame(socket, { t: "hello", rank, token }, new Uint8Array(0));
    return socket;
  }

  private accept(socket: net.Socket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    this.incoming.set(socket, -1);
    socket.setNoDelay(true);
    const frames = new FrameDecoder(MAX_HELLO_BYTES);
    let peer = -1;
    let saidBye = false;
    socket.on("data", (chunk: Buffer) => {
      frames.feed(chunk);
      for (;;) {
        let body: Buffer | null;
        try {
          body = frames.next();
        } catch {
          socket.destroy();
          return;
        }
        if (!body) break;
        const parsed = parseFrame(body);
        if (!parsed) {
          socket.destroy();
          return;
        }
        const { header, payload } = parsed;
        if (peer < 0) {
          if (header.t !== "hello" || !this.validHello(header)) {
            socket.destroy();
            return;
          }
          peer = header.rank;
          this.incoming.set(socket, peer);
          frames.maxFrameBytes = 0xffffffff;
          continue;
        }
        if (header.t === "msg") this.deliver(peer, header.ch, { meta: header.m, payload });
        else if (header.t === "abort") this.abortFrom(header.g, header.from, header.reason, header.lost);
        else if (header.t === "bye") saidBye = true;
      }
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      this.incoming.delete(socket);
      if (peer < 0 || this.closed) return;
      this.markLost(
        peer,
        saidBye
          ? new PeerLostError(peer, `global rank ${peer} destroyed its process group while this rank still expected data from it`)
          : new PeerLostError(peer, `the connection from global rank ${peer} closed unexpectedly (its process exited or crashed)`),
      );
    });
  }

  private validHello(h: { rank: number; token: string }): boolean {
    const a = Buffer.from(String(h.token));
    const b = Buffer.from(this.options.token);
    const tokenOk = a.length === b.length && timingSafeEqual(a, b);
    return tokenOk && Number.isInteger(h.rank) && h.rank >= 0 && h.rank < this.size && h.rank !== this.rank;
  }

  private deliver(peer: number, channel: string, message: Received): void {
    const box = this.mailbox(peer, channel);
    const waiter = box.waiters.shift();
    if (waiter) waiter.resolve(message);
    else box.queue.push(message);
  }

  private abortFrom(group: string, from: number, reason: string, lost?: number): void {
    const handler = this.abortHandlers.get(group);
    if (handler) handler(from, reason, lost);
    else if (!this.earlyAborts.has(group)) this.earlyAborts.set(group, { from, reason, lost });
  }

  private markLost(peer: number, reason: Error): void {
    if (!this.lostPeers.has(peer)) this.lostPeers.set(peer, reason);
    const prefix = `${peer}\u0000`;
    for (const [key, box] of this.mailboxes) {
      if (!key.startsWith(prefix)) continue;
      for (const w of box.waiters.splice(0)) w.reject(reason);
    }
  }
}

export function addressKey(name: string, rank: number): string {
  return `fulgur/pg/${name}/addr/${rank}`;
}

/** The address peers can reach us at: the one our store connection leaves from, if the store knows it. */
function defaultHost(store: Store): string {
  const local = (store as { localAddress?: unknown }).localAddress;
  if (typeof local === "string" && local.length > 0) return local.startsWith("::ffff:") ? local.slice(7) : local;
  return "127.0.0.1";
}

function writeFrame(socket: net.Socket, header: Header, payload: Uint8Array): Promise<void> {
  const head = Buffer.from(JSON.stringify(header));
  const prefix = Buffer.alloc(8);
  prefix.writeUInt32BE(4 + head.length + payload.byteLength, 0);
  prefix.writeUInt32BE(head.length, 4);
  return new Promise<void>((resolve, reject) => {
    if (socket.destroyed || socket.writableEnded) {
      reject(new Error("connection closed"));
      return;
    }
    socket.cork();
    socket.write(prefix);
    socket.write(head);
    socket.write(payload, (err) => (err ? reject(err) : resolve()));
    socket.uncork();
  });
}

function parseFrame(body: Buffer): { header: Header; payload: Uint8Array } | undefined {
  if (body.length < 4) return undefined;
  const hlen = body.readUInt32BE(0);
  if (4 + hlen > body.length) return undefined;
  try {
    const header = JSON.parse(body.toString("utf8", 4, 4 + hlen)) as Header;
    if (typeof header !== "object" || header === null || typeof header.t !== "string") return undefined;
    return { header, payload: body.subarray(4 + hlen) };
  } catch {
    return undefined;
  }
}

/** Whether something accepts connections at host:port (within 5 s); see [Note: noticing a dead peer]. */
function isListening(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.connect({ host, port });
    const done = (alive: boolean) => {
      clearTimeout(timer);
      probe.destroy();
      resolve(alive);
    };
    const timer = setTimeout(() => done(false), 5_000);
    probe.once("connect", () => done(true));
    probe.once("error", () => done(false));
  });
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("timed out")), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}
