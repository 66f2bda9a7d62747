/**
 * Worker threads that the calling thread waits on synchronously (the CPU optimizer's, the NVMe
 * offload's I/O): started, then waited for until they say they are ready, so a worker that cannot
 * start fails at once with a message instead of leaving a blocked step waiting for it.
 *
 * From the TypeScript sources (vitest, tsx) the worker runs the .ts entry through the shared
 * bootstrap (sourceWorker.ts). The built package runs its own bundled entry.
 */
import { Worker } from "node:worker_threads";
import { tsxWorkerBootstrap } from "./sourceWorker";

/** Node flags a worker cannot take (a script given with -e or --input-type, the tsx loader). */
const workerExecArgv = (): string[] => process.execArgv.filter((a) => !/tsx|^--input-type|^-e$|^--eval/.test(a));

export interface ReadyWorkerEntries {
  /** The entry among the sources, relative to the caller ("./optimizerWorker.ts"). */
  readonly source: string;
  /** The bundled entry beside the built caller ("./cpuOptimizerWorker.js"). */
  readonly built: string;
}

/**
 * Starts a worker for the module at `callerUrl` (its `import.meta.url`) and waits, at most
 * `timeoutMs`, until the worker sets the Int32 at `workerData.ready` to 1 and notifies it (once
 * its message handler is installed). Never what keeps a process alive.
 */
export function startReadyWorker(callerUrl: string, entries: ReadyWorkerEntries, what: string, hint = "", timeoutMs = 30_000): Worker {
  const ready = new SharedArrayBuffer(4);
  const worker = callerUrl.endsWith(".ts")
    ? new Worker(tsxWorkerBootstrap, {
        workerData: { entry: new URL(entries.source, callerUrl).href, ready },
        execArgv: workerExecArgv(),
      })
    : new Worker(new URL(entries.built, callerUrl), { workerData: { ready }, execArgv: workerExecArgv() });
  worker.unref();
  if (Atomics.wait(new Int32Array(ready), 0, 0, timeoutMs) === "timed-out") {
    void worker.terminate();
    throw new Error(`${what} did not start within ${Math.round(timeoutMs / 1000)} s${hint}`);
  }
  return worker;
}
