/**
 * An I/O thread of the disk offload: runs the positional reads and writes the main thread hands
 * it, in order (see ioThreads.ts).
 */
import { parentPort, workerData } from "node:worker_threads";
import { type IoRequest, runRequest } from "./ioRequest";

// Ready: the thread that started this one waits for it (ioThreads.ts, spawn).
const ready = new Int32Array((workerData as { ready: SharedArrayBuffer }).ready);
parentPort!.on("message", (r: IoRequest) => runRequest(r));
Atomics.store(ready, 0, 1);
Atomics.notify(ready, 0);
