/**
 * The rendezvous store server, hosted by rank 0 of a job on MASTER_ADDR:MASTER_PORT. It keeps
 * every key in memory, answers gets and waits as soon as their keys exist (or with a timeout error
 * naming the keys still missing), and refuses any client whose first frame does not carry the
 * job's token: the port is reachable by anyone on the network, and the store carries NCCL ids.
 */
import net from "node:net";
import { timingSafeEqual } from "node:crypto";
import { StoreBindError } from "../errors";
import { armTimer } from "../util/timers";
import {
  decode,
  encode,
  FrameDecoder,
  MAX_FRAME_BYTES,
  MAX_HELLO_BYTES,
  Op,
  ProtocolError,
  type ErrorCode,
  type Reply,
  type Request,
} from "./protocol";

export interface StoreServerOptions {
  /** Address to bind (MASTER_ADDR). */
  readonly host: string;
  /** Port to bind (MASTER_PORT); 0 picks a free one, see `port` after start. */
  readonly port: number;
  /** The job's token (FULGUR_STORE_TOKEN); clients must present the same string. "" accepts clients presenting "". */
  readonly token: string;
}

/** A get or wait parked until its keys exist. */
interface Waiter {
  readonly socket: net.Socket;
  readonly id: number;
  readonly keys: readonly string[];
  /** Replies once every key exists: a get returns the value, a wait returns Ok. */
  readonly answer: () => Reply;
  timer: NodeJS.Timeout | undefined;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function tokensEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  // timingSafeEqual needs equal lengths; comparing lengths first leaks only the length.
  return x.length === y.length && timingSafeEqual(x, y);
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0;
}

export class StoreServer {
  private readonly data = new Map<string, Uint8Array>();
  /** Parked gets and waits, woken by any write to one of their keys. */
  private readonly waiters = new Set<Waiter>();
  /** Every open connection, so close() can end them instead of waiting for clients to leave. */
  private readonly sockets = new Set<net.Socket>();
  private closed = false;

  private constructor(
    private readonly server: net.Server,
    private readonly token: string,
    readonly host: string,
    readonly port: number,
  ) {}

  /** Binds host:port and starts serving; rejects with StoreBindError naming the port when it is taken. */
  static async start(options: StoreServerOptions): Promise<StoreServer> {
    const { host, port, token } = options;
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException) => {
        server.close();
        reject(bindError(host, port, err));
      };
      server.once("error", onError);
      server.listen({ host, port, exclusive: true }, () => {
        server.off("error", onError);
        resolve();
      });
    });
    const bound = server.address() as net.AddressInfo;
    const store = new StoreServer(server, token, host, bound.port);
    server.on("connection", (socket) => store.accept(socket));
    // After a successful bind, errors are per-connection; keep the server up.
    server.on("error", () => {});
    return store;
  }

  /** Number of keys held; for tests and diagnostics. */
  get size(): number {
    return this.data.size;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const w of this.waiters) if (w.timer) clearTimeout(w.timer);
    this.waiters.clear();
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(socket: net.Socket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    this.sockets.add(socket);
    socket.setNoDelay(true);
    const frames = new FrameDecoder(MAX_HELLO_BYTES);
    let authenticated = false;
    socket.on("data", (chunk: Buffer) => {
      let bodies: Buffer[];
      try {
        bodies = frames.push(chunk);
      } catch {
        socket.destroy();
        return;
      }
      for (const body of bodies) {
        let req: Request;
        try {
          const m = decode(body);
          if (m.op >= Op.Ok) throw new ProtocolError("client sent a reply opcode");
          req = m as Request;
        } catch {
          socket.destroy();
          return;
        }
        if (!authenticated) {
          if (req.op !== Op.Hello || !tokensEqual(req.token, this.token)) {
            this.fail(socket, req.id, "token", "store token mismatch: this client's FULGUR_STORE_TOKEN is not the job's");
            socket.end();
            socket.destroySoon();
            return;
          }
          authenticated = true;
          frames.maxFrameBytes = MAX_FRAME_BYTES;
          this.reply(socket, { op: Op.Ok, id: req.id });
          continue;
        }
        this.handle(socket, req);
      }
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      this.sockets.delete(socket);
      for (const w of this.waiters) {
        if (w.socket === socket) {
          if (w.timer) clearTimeout(w.timer);
          this.waiters.delete(w);
        }
      }
    });
  }

  private handle(socket: net.Socket, req: Request): void {
    switch (req.op) {
      case Op.Hello:
        this.fail(socket, req.id, "bad_request", "hello sent twice on one connection");
        return;
      case Op.Set:
        this.write(req.key, req.value, () => this.reply(socket, { op: Op.Ok, id: req.id }));
        return;
      case Op.Get: {
        const key = req.key;
        this.park(socket, req.id, [key], req.timeoutMs, () => ({ op: Op.Value, id: req.id, value: this.data.get(key)! }));
        return;
      }
      case Op.Wait:
        this.park(socket, req.id, req.keys, req.timeoutMs, () => ({ op: Op.Ok, id: req.id }));
        return;
      case Op.Add: {
        const current = this.data.get(req.key);
        let value = 0;
        if (current !== undefined) {
          const text = decoder.decode(current);
          value = Number(text);
          if (!/^-?\d+$/.test(text) || !Number.isSafeInteger(value)) {
            this.fail(socket, req.id, "not_integer", `add("${req.key}"): the key holds ${JSON.stringify(text.slice(0, 64))}, not an integer counter`);
            return;
          }
        }
        const next = value + req.amount;
        if (!Number.isSafeInteger(next)) {
          this.fail(socket, req.id, "bad_request", `add("${req.key}", ${req.amount}): the result ${next} is not a safe integer`);
          return;
        }
        this.write(req.key, encoder.encode(String(next)), () => this.reply(socket, { op: Op.Number, id: req.id, value: next }));
        return;
      }
      case Op.CompareSet: {
        const current = this.data.get(req.key);
        // An absent key matches "" (the Store contract), so "create if absent" is compareSet(key, "", v).
        const matches = current === undefined ? req.expected.byteLength === 0 : bytesEqual(current, req.expected);
        const answer = () => this.reply(socket, { op: Op.Value, id: req.id, value: this.data.get(req.key) ?? new Uint8Array(0) });
        if (matches) this.write(req.key, req.desired, answer);
        else answer();
        return;
      }
      case Op.Delete: {
        const existed = this.data.delete(req.key);
        this.reply(socket, { op: Op.Bool, id: req.id, value: existed });
        return;
      }
    }
  }

  /** Answers at once if every key exists, otherwise parks the request until they do or the timeout passes. */
  private park(socket: net.Socket, id: number, keys: readonly string[], timeoutMs: number, answer: () => Reply): void {
    if (keys.every((k) => this.data.has(k))) {
      this.reply(socket, answer());
      return;
    }
    const waiter: Waiter = { socket, id, keys, answer, timer: undefined };
    waiter.timer = armTimer(timeoutMs, () => {
      this.waiters.delete(waiter);
      const missing = keys.filter((k) => !this.data.has(k));
      const what = keys.length === 1 ? `key "${keys[0]}"` : `key(s) ${missing.map((k) => `"${k}"`).join(", ")}`;
      this.fail(socket, id, "timeout", `store timed out after ${timeoutMs} ms waiting for ${what} to be set`, missing);
    });
    this.waiters.add(waiter);
  }

  /**
   * Stores a value, answers the writer, then wakes the requests waiting for the key. The writer
   * hears first: a woken waiter may end its process at once, and the server with it when that
   * process is rank 0 (whose server runs in another thread, so it may exit between two replies).
   */
  private write(key: string, value: Uint8Array, answerWriter: () => void): void {
    this.data.set(key, value);
    answerWriter();
    for (const w of this.waiters) {
      if (w.keys.includes(key) && w.keys.every((k) => this.data.has(k))) {
        if (w.timer) clearTimeout(w.timer);
        this.waiters.delete(w);
        this.reply(w.socket, w.answer());
      }
    }
  }

  private reply(socket: net.Socket, reply: Reply): void {
    if (!socket.destroyed) socket.write(encode(reply));
  }

  private fail(socket: net.Socket, id: number, code: ErrorCode, message: string, keys: readonly string[] = []): void {
    this.reply(socket, { op: Op.Error, id, code, message, keys: [...keys] });
  }
}

function bindError(host: string, port: number, err: NodeJS.ErrnoException): StoreBindError {
  if (err.code === "EADDRINUSE") {
    return new StoreBindError(
      host,
      port,
      err.code,
      `cannot start the rendezvous store: port ${port} on ${host} is already in use ` +
        `(another job or store is listening there); choose a free port with MASTER_PORT (or --master-port)`,
    );
  }
  if (err.code === "EADDRNOTAVAIL" || err.code === "ENOTFOUND" || err.code === "EAI_AGAIN") {
    return new StoreBindError(
      host,
      port,
      err.code,
      `cannot start the rendezvous store on ${host}:${port}: ${host} is not an address of this machine (${err.code}); ` +
        `set MASTER_ADDR (or --master-addr) to an address of the node running rank 0`,
    );
  }
  if (err.code === "EACCES") {
    return new StoreBindError(
      host,
      port,
      err.code,
      `cannot start the rendezvous store: binding port ${port} on ${host} is not permitted (ports below 1024 need privileges); ` +
        `choose another port with MASTER_PORT (or --master-port)`,
    );
  }
  return new StoreBindError(host, port, err.code, `cannot start the rendezvous store on ${host}:${port}: ${err.message}`);
}
