/**
 * The CPU optimizer on several threads, for training with state offloaded to host memory (FSDP's
 * cpuOffload, ZeRO-Offload), where the optimizer step over billions of parameters runs on the CPU.
 * Storages of 1 MiB and more live in SharedArrayBuffers (storage.ts), so worker threads update
 * ranges of the very memory the tensors view: the elements are split evenly over the threads (the
 * calling thread takes a share), and the caller waits on a shared counter (`Atomics.wait`), which
 * keeps `Backend.adamw` synchronous as every backend's is. Each element's update depends on that
 * element alone, so the result is bit-identical to one thread's.
 *
 * Threads: `setCpuOptimizerThreads(n)`, else FULGUR_CPU_OPTIMIZER_THREADS, else the machine's
 * available parallelism (at most 16). A step of fewer shared elements than THREADED_MIN_ELEMENTS
 * (or FULGUR_CPU_OPTIMIZER_MIN_ELEMENTS, or `setCpuOptimizerThreads(n, { minElements })`) stays on
 * the calling thread. Workers start at the first large step, never keep the process alive, stop
 * with `stopCpuOptimizerThreads()` (the offloading strategies' teardown), and a failing worker
 * fails the step with its error.
 */
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import type { AdamWHyper, PendingWork, View } from "../backend";
import { dataOf } from "./storage";
import { type AdamWJob, type AdamWTensor, type AddJob, type Piece, type SharedRange, runPieces } from "./optimizerJob";
import { isContiguous } from "../shape";
import { numelOf } from "./strided";
import { adamw } from "./adamw";
import { startReadyWorker } from "../readyWorker";
import { settleWork } from "../pendingWork";

// Stands in for a tensor the threads do not take (no piece refers to it).
const NONE: SharedRange = { buffer: -1, dtype: "float32", offset: 0 };
const EMPTY: AdamWTensor = { p: NONE, g: NONE, m: NONE, v: NONE, lp: null };

/** Below this many elements a step is done on the calling thread: handing it out costs more. */
export const THREADED_MIN_ELEMENTS = 1 << 18;
const MAX_DEFAULT_THREADS = 16;

let requested: number | null = null;
let requestedMin: number | null = null;
// Steps that went to the threads: what a test checks to know they ran.
let threadedSteps = 0;

/** How many AdamW steps ran on worker threads in this process. */
export function cpuOptimizerThreadedSteps(): number {
  return threadedSteps;
}
let pool: Worker[] = [];

function fromEnv(name: string, least: number, what: string): number | null {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return null;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < least) {
    throw new RangeError(`${name}: got ${JSON.stringify(raw)}; expected an integer of at least ${least} (${what})`);
  }
  return n;
}

/** Elements of shared memory a step needs before it is handed to the threads. */
function minElements(): number {
  return requestedMin ?? fromEnv("FULGUR_CPU_OPTIMIZER_MIN_ELEMENTS", 0, "the smallest CPU optimizer step handed to worker threads") ?? THREADED_MIN_ELEMENTS;
}

/** Threads the CPU optimizer step uses, the calling one included. */
export function cpuOptimizerThreads(): number {
  return requested ?? fromEnv("FULGUR_CPU_OPTIMIZER_THREADS", 1, "threads for the CPU optimizer step, 1 = the calling thread only") ?? Math.max(1, Math.min(MAX_DEFAULT_THREADS, availableParallelism()));
}

/**
 * Sets the threads of the CPU optimizer step (1: the calling thread only); extra workers stop.
 * `minElements`: the smallest step (in elements of shared memory) handed to the threads.
 */
export function setCpuOptimizerThreads(n: number, options: { readonly minElements?: number } = {}): void {
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`setCpuOptimizerThreads: got ${n}; expected a positive integer`);
  const min = options.minElements;
  if (min !== undefined && (!Number.isInteger(min) || min < 0)) throw new RangeError(`setCpuOptimizerThreads: minElements got ${min}; expected a non-negative integer`);
  requested = n;
  if (min !== undefined) requestedMin = min;
  for (const w of pool.splice(n - 1)) void w.terminate();
}

/** Stops every worker (they are started again when needed). */
export function stopCpuOptimizerThreads(): void {
  for (const w of pool.splice(0)) void w.terminate();
}

/** A worker of the pool; one that exits leaves the pool, to be started again when needed. */
function spawn(): Worker {
  const worker = startReadyWorker(
    import.meta.url,
    { source: "./optimizerWorker.ts", built: "./cpuOptimizerWorker.js" },
    "CPU optimizer: a worker thread",
    " (set FULGUR_CPU_OPTIMIZER_THREADS=1 to step on the calling thread only)",
  );
  worker.on("exit", () => {
    pool = pool.filter((w) => w !== worker);
  });
  return worker;
}

/** The shared buffers a job refers to, each listed once, and views as ranges into them. */
class SharedBuffers {
  readonly buffers: SharedArrayBuffer[] = [];
  private readonly index = new Map<SharedArrayBuffer, number>();

  /** The view's range, or null when its memory is not shared. */
  range(v: View): SharedRange | null {
    const data = dataOf(v);
    if (!(data.buffer instanceof SharedArrayBuffer)) return null;
    let b = this.index.get(data.buffer);
    if (b === undefined) {
      b = this.buffers.length;
      this.buffers.push(data.buffer);
      this.index.set(data.buffer, b);
    }
    return { buffer: b, dtype: v.storage.dtype, offset: v.offset + data.byteOffset / data.BYTES_PER_ELEMENT };
  }
}

/** Each tensor's ranges in SharedArrayBuffers, or null for a tensor whose memory is not shared. */
function sharedTensors(lists: readonly (readonly (View | null)[])[], count: number): { buffers: SharedArrayBuffer[]; tensors: (AdamWTensor | null)[] } {
  const shared = new SharedBuffers();
  const tensors: (AdamWTensor | null)[] = [];
  for (let t = 0; t < count; t++) {
    const [p, g, m, v] = lists.slice(0, 4).map((l) => shared.range(l[t]!));
    const lpView = lists[4]?.[t] ?? null;
    const lp = lpView ? shared.range(lpView) : null;
    tensors.push(!p || !g || !m || !v || (lpView && !lp) ? null : { p, g, m, v, lp });
  }
  return { buffers: shared.buffers, tensors };
}

/**
 * The call's tensors as the threads see them: ranges in shared buffers, each tensor's elements for
 * the threads (0 for one whose memory is not shared), and `here`, which runs those at the call.
 */
function threadShares(params: View[], grads: View[], expAvg: View[], expAvgSq: View[], hyper: AdamWHyper, lowPrecision?: readonly (View | null)[]) {
  const shared = sharedTensors([params, grads, expAvg, expAvgSq, lowPrecision ?? []], params.length);
  const sizes = params.map((p, t) => (shared.tensors[t] ? numelOf(p.shape) : 0));
  const left = params.map((_, t) => t).filter((t) => !shared.tensors[t]);
  const pick = <T>(list: readonly T[]): T[] => left.map((t) => list[t]);
  // The tensors the threads do not take, as the serial step does them.
  const here = (): void => {
    if (left.length > 0) adamw(pick(params), pick(grads), pick(expAvg), pick(expAvgSq), hyper, lowPrecision && pick(lowPrecision));
  };
  return { shared, sizes, here };
}

/** Splits the elements of every tensor into `threads` runs of about equal size (a size of 0: a tensor left out). */
function split(sizes: readonly number[], threads: number): Piece[][] {
  const total = sizes.reduce((s, n) => s + n, 0);
  const share = Math.ceil(total / threads);
  const out: Piece[][] = Array.from({ length: threads }, () => []);
  let k = 0;
  let room = share;
  sizes.forEach((n, tensor) => {
    let start = 0;
    while (start < n) {
      const count = Math.min(room, n - start);
      out[k].push({ tensor, start, count });
      start += count;
      room -= count;
      if (room === 0 && k < threads - 1) {
        k++;
        room = share;
      }
    }
  });
  return out;
}

/** A job handed to the workers: its control words, and the workers it went to. */
interface Dispatched {
  readonly control: SharedArrayBuffer;
  readonly helpers: number;
  readonly total: number;
}

/** Hands the pieces after the first `keep` runs to the workers (started as needed); `keep` runs stay with the caller. */
function dispatch(
  shared: ReturnType<typeof sharedTensors>,
  sizes: readonly number[],
  hyper: AdamWHyper,
  workers: number,
  keep: number,
): { job: Omit<AdamWJob, "control" | "pieces">; pieces: Piece[][]; dispatched: Dispatched } {
  const pieces = split(sizes, workers + keep);
  const job = { buffers: shared.buffers, tensors: shared.tensors.map((t) => t ?? EMPTY), hyper };
  const dispatched = handOut(workers, sizes.reduce((s, n) => s + n, 0), (k, control) => ({ ...job, pieces: pieces[k + keep], control }) satisfies AdamWJob);
  return { job, pieces, dispatched };
}

/** Posts `jobFor(k, control)` to each of the first `workers` workers of the pool (started as needed), under one control word. */
function handOut(workers: number, total: number, jobFor: (k: number, control: SharedArrayBuffer) => AdamWJob | AddJob): Dispatched {
  while (pool.length < workers) pool.push(spawn());
  const control = new SharedArrayBuffer(8 + 2048);
  const helpers = pool.slice(0, workers);
  helpers.forEach((w, k) => w.postMessage(jobFor(k, control)));
  return { control, helpers: helpers.length, total };
}

/** Whether every worker of a dispatched job is done (never blocks). */
function finished(d: Dispatched): boolean {
  return Atomics.load(new Int32Array(d.control, 0, 2), 0) >= d.helpers;
}

/** Blocks until every worker of the job is done; a failed or stopped worker fails it with its error. */
function waitFor(d: Dispatched): void {
  const flags = new Int32Array(d.control, 0, 2);
  // Generous: a worker that stopped (killed, out of memory) must not hang the step for ever.
  const deadline = Date.now() + Math.max(120_000, d.total / 5_000);
  for (let done = Atomics.load(flags, 0); done < d.helpers; done = Atomics.load(flags, 0)) {
    if (Date.now() > deadline) throw new Error(`CPU optimizer: ${d.helpers - done} of ${d.helpers} worker thread(s) did not finish the step`);
    Atomics.wait(flags, 0, done, 1000);
  }
  if (Atomics.load(flags, 1) !== 0) {
    const text = new TextDecoder().decode(new Uint8Array(d.control, 8, 2048).slice()).replace(/\0+$/, "");
    throw new Error(`CPU optimizer: a worker thread failed: ${text}`);
  }
}

/**
 * The fused AdamW step over worker threads. Returns false, having done nothing, when it does not
 * apply (one thread, a small step, or memory that is not shared): the caller runs it in place.
 */
export function adamwThreaded(
  params: View[],
  grads: View[],
  expAvg: View[],
  expAvgSq: View[],
  hyper: AdamWHyper,
  lowPrecision?: readonly (View | null)[],
): boolean {
  const threads = cpuOptimizerThreads();
  if (threads <= 1) return false;
  // Tensors in shared memory (storages of 1 MiB and more) go to the threads; the rest stay here.
  const { shared, sizes, here } = threadShares(params, grads, expAvg, expAvgSq, hyper, lowPrecision);
  const total = sizes.reduce((s, n) => s + n, 0);
  if (total === 0 || total < minElements()) return false;
  const { job, pieces, dispatched } = dispatch(shared, sizes, hyper, threads - 1, 1);
  runPieces({ ...job, pieces: pieces[0] });
  here();
  waitFor(dispatched);
  threadedSteps++;
  return true;
}

/**
 * The fused AdamW step handed to the worker threads, the calling thread left free (the sharding
 * engine steps a unit this way while its thread drives the rest of backward, and the CPU's share
 * of a streamed step while its thread queues the device's). Tensors whose memory is not shared (small
 * storages) are updated at the call, on the calling thread. Null, having done nothing, when the
 * threads take nothing: one thread, or no tensor in shared memory. The tensors must not be read or
 * written until `wait()` returns.
 */
export function adamwBeside(
  params: View[],
  grads: View[],
  expAvg: View[],
  expAvgSq: View[],
  hyper: AdamWHyper,
  lowPrecision?: readonly (View | null)[],
): PendingWork | null {
  const threads = cpuOptimizerThreads();
  if (threads <= 1 || params.length === 0) return null;
  const { shared, sizes, here } = threadShares(params, grads, expAvg, expAvgSq, hyper, lowPrecision);
  if (sizes.every((n) => n === 0)) return null;
  const pending = pendingOf(dispatch(shared, sizes, hyper, threads - 1, 0).dispatched);
  try {
    here();
  } catch (err) {
    // The threads' part uses the same call's memory: it ends before the error travels.
    settleWork(pending);
    throw err;
  }
  threadedSteps++;
  return pending;
}

/** A dispatched job as work under way: `wait()` blocks until its workers are done and rethrows a failure, each time. */
function pendingOf(dispatched: Dispatched): PendingWork {
  let settled = false;
  let failure: unknown = null;
  return {
    poll: () => settled || finished(dispatched),
    wait: () => {
      if (!settled) {
        settled = true;
        try {
          waitFor(dispatched);
        } catch (err) {
          failure = err;
        }
      }
      if (failure !== null) throw failure;
    },
  };
}

/**
 * `dst += src` handed wholly to the worker threads, the calling thread left free (the sharding
 * engine adds a later micro-batch's offloaded gradients into the gradient slice this way while
 * backward goes on). Null, having done nothing, where it does not apply: one thread, memory not
 * shared, or views that are not contiguous fp32 of one size. Neither tensor may be touched until
 * `wait()` returns.
 */
export function addBeside(dst: View, src: View): PendingWork | null {
  const threads = cpuOptimizerThreads();
  const n = numelOf(dst.shape);
  const plain = (v: View): boolean => v.storage.dtype === "float32" && isContiguous(v.shape, v.strides);
  if (threads <= 1 || n === 0 || numelOf(src.shape) !== n || !plain(dst) || !plain(src)) return null;
  const shared = new SharedBuffers();
  const d = shared.range(dst);
  const s = shared.range(src);
  if (!d || !s) return null;
  const per = Math.ceil(n / (threads - 1));
  const jobFor = (k: number, control: SharedArrayBuffer): AddJob => ({ kind: "add", buffers: shared.buffers, dst: d, src: s, start: k * per, count: Math.min(per, n - k * per), control });
  return pendingOf(handOut(Math.ceil(n / per), n, jobFor));
}
