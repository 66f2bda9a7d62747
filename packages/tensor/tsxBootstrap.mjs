// Runs a worker thread's TypeScript entry (workerData.entry) when a package is used from its
// sources (vitest, tsx): a worker thread does not inherit the tsx loader, so it registers it first.
// The one copy every package's workers start through (`tsxWorkerBootstrap` in src/sourceWorker.ts);
// built packages run their bundled entries directly.
import { workerData } from "node:worker_threads";
import { register } from "tsx/esm/api";

register();
await import(workerData.entry);
