/**
 * The rendezvous store client: the `Store` contract of @fulgur/core over one TCP connection to the
 * StoreServer. Requests are numbered and may overlap (a long wait does not hold up a set). Waits
 * time out on the server, which names the keys still missing; a client-side timer a little later
 * covers a server that stopped answering. Reconnecting is deliberately not attempted: a lost
 * store means rank 0 is gone, and the job is over.
 */
import net from "node:net";
import type { Store } from "@fulgur/core";
import {
  DistributedArgumentError,
  StoreConnectionError,
  StoreRequestError,
  StoreTimeoutError,
  StoreTokenMismatchError,
} from "../errors";
import { armTimer, checkTimeout } from "../util/timers";
import { decode, encode, FrameDecoder, Op, toBytes, type Reply, type Request } from "./protocol";

export interface TcpStoreOptions {
  readonly host: string;
  readonly port: number;
  /** The job's token (FULGUR_STORE_TOKEN). */
  readonly token: string;
  /** Default timeout of get and wait, in ms (default 300 000, PyTorch's). */
  readonly timeoutMs?: number;
  /** How long to keep retrying while rank 0 has not started its server yet (default 60 000 ms). */
  readonly connectTimeoutMs?: number;
}

/** Extra time the client waits past a server-side timeout before deciding the server is gone. */
const CLIENT_GRACE_MS = 2_000;
const RETRY_DELAY_MS = 50;

interface Pending {
  readonly describe: string;
  readonly timeoutMs: number;
  readonly resolve: (reply: Reply) => void;
  readonly reject: (err: Error) => void;
  readonly timer: NodeJS.Timeout | undefined;
}

type RequestBody = Request extends infer R ? (R extends Request ? Omit<R, "id"> : never) : never;

export class TcpStore implements Store {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private closed = false;
  /** Why the connection ended, once it has; later requests fail with it. */
  private lost: Error | undefined;

  private constructor(
    private readonly socket: net.Socket,
    readonly host: string,
    readonly port: number,
    readonly timeoutMs: number,
  ) {
    const frames = new FrameDecoder();
    socket.on("data", (chunk: Buffer) => {
      try {
        for (const body of frames.push(chunk)) this.dispatch(decode(body) as Reply);
      } catch (err) {
        this.shutdown(new StoreConnectionError(`malformed reply from the store at ${host}:${port}: ${(err as Error).message}`));
        socket.destroy();
      }
    });
    socket.on("error", (err) => this.shutdown(new StoreConnectionError(`connection to the store at ${host}:${port} failed: ${err.message}`)));
    socket.on("close", () =>
      this.shutdown(
        new StoreConnectionError(`the store at ${host}:${port} closed the connection (rank 0 exited or closed its store)`),
      ),
    );
  }

  /** The local address of this connection: the interface this node reaches rank 0 through. */
  get localAddress(): string | undefined {
    return this.socket.localAddress;
  }

  /** Connects (retrying until connectTimeoutMs while the server is not up yet) and presents the token. */
  static async connect(options: TcpStoreOptions): Promise<TcpStore> {
    const { host, port, token } = options;
    const timeoutMs = checkTimeout(options.timeoutMs ?? 300_000, "timeoutMs");
    const connectTimeoutMs = checkTimeout(options.connectTimeoutMs ?? 60_000, "connectTimeoutMs");
    if (!Number.isInteger(port) || port < 1 || port > 65535) {
      throw new DistributedArgumentError(`port: got ${JSON.stringify(port)}; expected an integer from 1 to 65535`);
    }
    const deadline = Date.now() + connectTimeoutMs;
    const socket = await connectWithRetry(host, port, deadline, connectTimeoutMs);
    const store = new TcpStore(socket, host, port, timeoutMs);
    try {
      await store.request({ op: Op.Hello, token }, "hello", connectTimeoutMs);
    } catch (err) {
      socket.destroy();
      if (err instanceof StoreTokenMismatchError) {
        throw new StoreTokenMismatchError(
          `store token mismatch: the store at ${host}:${port} refused this client; ` +
            `every rank must get the same FULGUR_STORE_TOKEN (set by \`fulgur run\`, or by you on every node for multi-node jobs)`,
        );
      }
      if (err instanceof StoreConnectionError) {
        throw new StoreTokenMismatchError(
          `store token mismatch (or not a Fulgur store): ${host}:${port} closed the connection during the handshake`,
        );
      }
      throw err;
    }
    return store;
  }

  async set(key: string, value: Uint8Array | string): Promise<void> {
    await this.request({ op: Op.Set, key: checkKey(key), value: toBytes(value) }, `set("${key}")`);
  }

  async get(key: string, timeoutMs = this.timeoutMs): Promise<Uint8Array> {
    checkTimeout(timeoutMs, "timeoutMs");
    const reply = await this.request({ op: Op.Get, key: checkKey(key), timeoutMs }, `get("${key}")`, timeoutMs, [key]);
    return (reply as Extract<Reply, { op: typeof Op.Value }>).value;
  }

  async wait(keys: readonly string[], timeoutMs = this.timeoutMs): Promise<void> {
    checkTimeout(timeoutMs, "timeoutMs");
    if (!Array.isArray(keys)) throw new DistributedArgumentError(`keys: got ${typeof keys}; expected an array of strings`);
    keys.forEach(checkKey);
    const list = keys.map((k) => `"${k}"`).join(", ");
    await this.request({ op: Op.Wait, keys: [...keys], timeoutMs }, `wait([${list}])`, timeoutMs, keys);
  }

  async add(key: string, amount: number): Promise<number> {
    if (!Number.isSafeInteger(amount)) {
      throw new DistributedArgumentError(`add("${key}") amount: got ${amount}; expected a safe integer`);
    }
    const reply = await this.request({ op: Op.Add, key: checkKey(key), amount }, `add("${key}", ${amount})`);
    return (reply as Extract<Reply, { op: typeof Op.Number }>).value;
  }

  async compareSet(key: string, expected: Uint8Array | string, desired: Uint8Array | string): Promise<Uint8Array> {
    const reply = await this.request(
      { op: Op.CompareSet, key: checkKey(key), expected: toBytes(expected), desired: toBytes(desired) },
      `compareSet("${key}")`,
    );
    return (reply as Extract<Reply, { op: typeof Op.Value }>).value;
  }

  async delete(key: string): Promise<boolean> {
    const reply = await this.request({ op: Op.Delete, key: checkKey(key) }, `delete("${key}")`);
    return (reply as Extract<Reply, { op: typeof Op.Bool }>).value;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.shutdown(new StoreConnectionError(`the store client for ${this.host}:${this.port} was closed`));
    await new Promise<void>((resolve) => {
      if (this.socket.destroyed) return resolve();
      this.socket.once("close", () => resolve());
      this.socket.end();
      // A server that never answers the FIN must not hold close() up.
      setTimeout(() => this.socket.destroy(), 1_000).unref();
    });
  }

  /**
   * Sends one request. `timeoutMs` (for get/wait) arms the client-side fallback timer; the server's
   * own timeout normally answers first, with the keys that are still missing.
   */
  private request(body: RequestBody, describe: string, timeoutMs?: number, keys: readonly string[] = []): Promise<Reply> {
    if (this.closed && body.op !== Op.Hello) {
      return Promise.reject(new StoreConnectionError(`${describe}: the store client was closed`));
    }
    if (this.lost) return Promise.reject(new StoreConnectionError(`${describe}: ${this.lost.message}`));
    const id = this.nextId++;
    if (this.nextId > 0xffffffff) this.nextId = 1;
    return new Promise<Reply>((resolve, reject) => {
      const timer =
        timeoutMs === undefined
          ? undefined
          : armTimer(timeoutMs + CLIENT_GRACE_MS, () => {
              this.pending.delete(id);
              reject(
                new StoreTimeoutError(
                  keys,
                  timeoutMs,
                  `${describe} timed out after ${timeoutMs} ms (the store at ${this.host}:${this.port} did not answer)`,
                ),
              );
            });
      this.pending.set(id, { describe, timeoutMs: timeoutMs ?? 0, resolve, reject, timer });
      this.socket.write(encode({ ...body, id } as Request));
    });
  }

  private dispatch(reply: Reply): void {
    const p = this.pending.get(reply.id);
    if (!p) return; // already timed out on this side
    this.pending.delete(reply.id);
    if (p.timer) clearTimeout(p.timer);
    if (reply.op !== Op.Error) {
      p.resolve(reply);
      return;
    }
    if (reply.code === "timeout") {
      p.reject(new StoreTimeoutError(reply.keys, p.timeoutMs, `${p.describe}: ${reply.message}`));
    } else if (reply.code === "token") {
      p.reject(new StoreTokenMismatchError(reply.message));
    } else {
      p.reject(new StoreRequestError(`${p.describe}: ${reply.message}`));
    }
  }

  private shutdown(reason: Error): void {
    if (!this.lost) this.lost = reason;
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      if (p.timer) clearTimeout(p.timer);
      p.reject(new StoreConnectionError(`${p.describe}: ${reason.message}`));
    }
  }
}

function checkKey(key: string): string {
  if (typeof key !== "string" || key.length === 0) {
    throw new DistributedArgumentError(`store key: got ${JSON.stringify(key)}; expected a non-empty string`);
  }
  return key;
}

/** Connects, retrying refused connections until the deadline: rank 0 may start its server after others start. */
async function connectWithRetry(host: string, port: number, deadline: number, connectTimeoutMs: number): Promise<net.Socket> {
  let lastError: NodeJS.ErrnoException | undefined;
  for (;;) {
    try {
      return await new Promise<net.Socket>((resolve, reject) => {
        const socket = net.connect({ host, port });
        socket.once("connect", () => {
          socket.off("error", reject);
          socket.setNoDelay(true);
          resolve(socket);
        });
        socket.once("error", reject);
      });
    } catch (err) {
      lastError = err as NodeJS.ErrnoException;
      const retryable = ["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "EAI_AGAIN", "ENOTFOUND"];
      if (!retryable.includes(lastError.code ?? "") || Date.now() + RETRY_DELAY_MS > deadline) break;
      await new Promise((r) => setTimeout(r, RETRY_DELAY_MS));
    }
  }
  throw new StoreConnectionError(
    `could not connect to the rendezvous store at ${host}:${port} within ${connectTimeoutMs} ms (${lastError?.code ?? lastError?.message}); ` +
      `check that rank 0 is running and that MASTER_ADDR/MASTER_PORT point at it`,
  );
}
