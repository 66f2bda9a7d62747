// Runs the disk offload I/O worker's TypeScript entry when the package is used from its sources (vitest,
// tsx): a worker thread does not inherit the tsx loader, so it registers it first. The built
// package runs dist/nvmeIoWorker.js directly (see spawn in ioThreads.ts).
import { workerData } from "node:worker_threads";
import { register } from "tsx/esm/api";

register();
await import(workerData.entry);
