/**
 * The caller's side of the transport's worker thread: starting it, sending requests and routing
 * their replies, blocking on a slot's status word without an event loop (for `synchronize()`),
 * and stopping the thread when nothing uses it any more.
 *
 * [Note: blocking wait] `block()` waits on the status word with Atomics.wait in slices of
 * BLOCK_SLICE_MS rather than once: between slices it checks that the worker is still alive (its
 * control block's Dead word and heartbeat), because a blocked thread cannot hear the worker's
 * 'exit' event. The worker enforces the group's timeout on every operation and settles its slot
 * whatever happens (a peer lost, a failure reported in the store, a timeout), so a live worker
 * always wakes the caller; only a worker whose event loop has not turned for longer than the
 * group's timeout (plus a grace) makes `block()` give up on its own.
 *
 * [Note: keeping the process alive] The worker is unref'ed, so it never keeps a finished process
 * alive; the reply port is ref'ed only while a request is outstanding, so a process that awaits a
 * collective's `wait()` and nothing else does not exit under it.
 *
 * [Note: exit while serving] The store server of rank 0 runs in this thread, so the process can
 * exit (its main thread calls process.exit on hearing of a failure, say) while the server is half
 * way through answering the requests one write woke. Other ranks would then miss the answer and
 * see the store vanish instead. A thread that serves the store therefore holds the process's exit
 * for up to EXIT_HOLD_MS, until the worker has finished its current task.
 *
 * [Note: worker script] The built package runs dist/processGroupWorker.js (its own tsup entry),
 * found beside the bundle with `new URL(..., import.meta.url)`. From the TypeScript sources (vitest,
 * or a script run with tsx) this module's URL ends in .ts and there is no .js to run; Node 20 does
 * not carry a loader given with `--import` into worker threads, so a small bootstrap
 * (`tsxWorkerBootstrap` of @fulgur/tensor, which every package's workers share) registers tsx (a
 * dependency of this package) in the worker and imports the .ts entry. Tests therefore run the
 * worker from the sources they test, not from a dist/ that may be stale.
 */
import { MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from "node:worker_threads";
import { tsxWorkerBootstrap } from "@fulgur/tensor";
import { GroupFailedError } from "../../errors";
import type { CollectiveRecord } from "../collectiveLog";
import { fromRecord } from "./errorCodec";
import {
  allocSlot,
  Control,
  CONTROL_WORDS,
  SlotStatus,
  statusWord,
  type Reply,
  type ReplyValue,
  type Request,
  type WorkerData,
} from "./protocol";

/** How long one Atomics.wait lasts before the worker's liveness is checked again. */
const BLOCK_SLICE_MS = 200;
/** How long past the group's timeout a silent worker is given before a blocked caller gives up. */
const STALL_GRACE_MS = 10_000;
/** See [Note: exit while serving]. */
const EXIT_HOLD_MS = 250;

export type ReplyHandler = (error: Error | undefined, value?: ReplyValue) => void;

/** A request without its id: the thread numbers requests. */
type Unnumbered<R> = R extends Request ? Omit<R, "id"> : never;

export class GroupThread {
  private nextId = 1;
  private readonly waiting = new Map<number, ReplyHandler>();
  /** Why the thread can no longer serve requests, once it cannot. */
  private gone: Error | undefined;
  private lastError: Error | undefined;
  /** World groups and store servers living in this thread; it stops when the last one goes. */
  private users = 0;
  /** The collective log as last read, for reading after the thread is gone (a destroyed group). */
  private lastLog: CollectiveRecord[] = [];

  private constructor(
    private readonly worker: Worker,
    /** Requests out, replies in; see [Note: reply before status] in protocol.ts. */
    private readonly port: MessagePort,
    private readonly control: Int32Array,
  ) {
    port.on("message", (reply: Reply) => this.dispatch(reply));
    port.unref();
    worker.unref();
    worker.on("error", (err) => (this.lastError = err));
    worker.on("exit", (code) => {
      const why = this.lastError ? `: ${this.lastError.message}` : ` with code ${code}`;
      this.fail(new GroupFailedError(`the process group's worker thread exited${why}`, { cause: this.lastError }));
    });
  }

  static start(): GroupThread {
    const channel = new MessageChannel();
    const control = new SharedArrayBuffer(CONTROL_WORDS * 4);
    const worker = spawn({ port: channel.port2, control }, [channel.port2]);
    return new GroupThread(worker, channel.port1, new Int32Array(control));
  }

  /** Sends a request; `onReply` runs once, on its reply or when the thread is gone. */
  send(req: Unnumbered<Request>, onReply: ReplyHandler): void {
    if (this.gone) {
      onReply(this.gone);
      return;
    }
    const id = this.nextId++;
    this.waiting.set(id, onReply);
    // See [Note: keeping the process alive].
    if (this.waiting.size === 1) this.port.ref();
    this.port.postMessage({ ...req, id });
  }

  request(req: Unnumbered<Request>): Promise<ReplyValue> {
    return new Promise((resolve, reject) => this.send(req, (err, value) => (err ? reject(err) : resolve(value))));
  }

  /**
   * Blocks this thread until `slot` is settled; see [Note: blocking wait]. Throws a
   * GroupFailedError when the worker died or stayed silent past `timeoutMs` plus a grace.
   */
  block(slot: SharedArrayBuffer, timeoutMs: number): void {
    const word = statusWord(slot);
    let beat = Atomics.load(this.control, Control.Heartbeat);
    let quietSince = Date.now();
    while (Atomics.load(word, 0) === SlotStatus.Pending) {
      if (this.gone) throw this.gone;
      if (Atomics.wait(word, 0, SlotStatus.Pending, BLOCK_SLICE_MS) !== "timed-out") continue;
      if (Atomics.load(this.control, Control.Dead) !== 0) {
        throw new GroupFailedError("the process group's worker thread died of an internal error (the first error on this rank says which)");
      }
      const now = Date.now();
      const b = Atomics.load(this.control, Control.Heartbeat);
      if (b !== beat) {
        beat = b;
        quietSince = now;
      } else if (now - quietSince > timeoutMs + STALL_GRACE_MS) {
        throw new GroupFailedError(
          `the process group's worker thread has not run for ${now - quietSince} ms (longer than the group's timeout of ${timeoutMs} ms)`,
        );
      }
    }
  }

  /** Delivers every reply already queued, without the event loop. */
  drain(): void {
    for (;;) {
      const m = receiveMessageOnPort(this.port);
      if (!m) return;
      this.dispatch(m.message as Reply);
    }
  }

  /** The worker's collective log (shared by every group of its transport), oldest first. */
  recentCollectives(timeoutMs: number): CollectiveRecord[] {
    if (!this.gone) {
      const slot = allocSlot(0);
      let error: Error | undefined;
      this.send({ t: "log", slot }, (err, value) => {
        error = err;
        if (!err) this.lastLog = value as CollectiveRecord[];
      });
      this.block(slot, timeoutMs);
      this.drain();
      if (error && !this.gone) throw error;
    }
    return this.lastLog.map((r) => Object.freeze({ ...r, shape: [...r.shape] }));
  }

  /** Makes process exit wait for the worker's current task; see [Note: exit while serving]. */
  holdExit(): void {
    process.on("exit", this.finishBeforeExit);
  }

  private readonly finishBeforeExit = (): void => {
    if (this.gone) return;
    const slot = allocSlot(0);
    this.port.postMessage({ t: "ping", id: this.nextId++, slot });
    Atomics.wait(statusWord(slot), 0, SlotStatus.Pending, EXIT_HOLD_MS);
  };

  /** Counts a world group or store server living in the thread. */
  retain(): void {
    this.users++;
  }

  /** Drops one user; the last one stops the thread. */
  async release(): Promise<void> {
    if (--this.users <= 0) await this.stop();
  }

  /** Ends the thread; requests still waiting fail. */
  async stop(): Promise<void> {
    if (this.gone) return;
    process.off("exit", this.finishBeforeExit);
    // Kept for recentCollectives() after the end: a failed job prints where each rank was.
    const asked = this.request({ t: "log", slot: allocSlot(0) });
    const log = await Promise.race([asked, new Promise((r) => setTimeout(r, 2_000).unref())]).catch(() => undefined);
    if (Array.isArray(log)) this.lastLog = log;
    this.fail(new GroupFailedError("the process group's worker thread was stopped (the group was destroyed)"));
    await this.worker.terminate();
  }

  private dispatch(reply: Reply): void {
    const handler = this.waiting.get(reply.id);
    if (!handler) return;
    this.waiting.delete(reply.id);
    if (this.waiting.size === 0) this.port.unref();
    handler(reply.error ? fromRecord(reply.error) : undefined, reply.value);
  }

  private fail(err: Error): void {
    this.gone ??= err;
    const handlers = [...this.waiting.values()];
    this.waiting.clear();
    this.port.unref();
    for (const h of handlers) h(this.gone);
  }
}

/** See [Note: worker script]. */
function spawn(data: WorkerData, transferList: MessagePort[]): Worker {
  if (import.meta.url.endsWith(".ts")) {
    const entry = new URL("./entry.ts", import.meta.url).href;
    return new Worker(tsxWorkerBootstrap, { workerData: { ...data, entry }, transferList, execArgv: withoutTsx(process.execArgv) });
  }
  return new Worker(new URL("./processGroupWorker.js", import.meta.url), { workerData: data, transferList });
}

/** The bootstrap registers tsx itself; its loader inherited through `--import` would only cost start-up time. */
function withoutTsx(execArgv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < execArgv.length; i++) {
    const a = execArgv[i];
    if (a === "--import" && /tsx/.test(execArgv[i + 1] ?? "")) i++;
    else if (!(a.startsWith("--import=") && /tsx/.test(a))) out.push(a);
  }
  return out;
}
