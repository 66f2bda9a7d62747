/**
 * A CPU optimizer worker thread: runs AdamW (or an add) on ranges of shared memory (SharedArrayBuffer-backed
 * storages) that the main thread hands it, then counts itself done in a shared control word. See
 * optimizerThreads.ts.
 */
import { parentPort, workerData } from "node:worker_threads";
import type { AdamWJob, AddJob } from "./optimizerJob";
import { runAdd, runPieces } from "./optimizerJob";

// Ready: the thread that started this one waits for it (optimizerThreads.ts, spawn).
const ready = new Int32Array((workerData as { ready: SharedArrayBuffer }).ready);

parentPort!.on("message", (job: AdamWJob | AddJob) => {
  const control = new Int32Array(job.control);
  try {
    if ("kind" in job) runAdd(job);
    else runPieces(job);
  } catch (e) {
    const text = new TextEncoder().encode(`${(e as Error)?.stack ?? String(e)}`.slice(0, 2000));
    new Uint8Array(job.control, 8, 2048).set(text.subarray(0, 2048));
    Atomics.store(control, 1, 1);
  }
  Atomics.add(control, 0, 1);
  Atomics.notify(control, 0);
});

Atomics.store(ready, 0, 1);
Atomics.notify(ready, 0);
