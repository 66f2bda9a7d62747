// Runs the worker's TypeScript entry when the package is used from its sources (vitest, tsx): a
// worker thread does not inherit the tsx loader, so it registers it first. See
// [Note: worker script] in thread.ts. The built package runs dist/processGroupWorker.js directly.
import { workerData } from "node:worker_threads";
import { register } from "tsx/esm/api";

register();
await import(workerData.entry);
