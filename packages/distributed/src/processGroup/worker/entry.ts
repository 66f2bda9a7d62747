/**
 * The transport's worker thread: its script (emitted by tsup as dist/processGroupWorker.js). It
 * serves requests from the caller's thread (see protocol.ts) with a GroupService, beats a heartbeat
 * the caller checks while it blocks, and on an error it cannot survive fails every operation in
 * flight, so that no caller stays blocked on a status word nobody will set.
 */
import { workerData } from "node:worker_threads";
import { Control, HEARTBEAT_MS, type Request, type WorkerData } from "./protocol";
import { GroupService } from "./service";

const { port, control } = workerData as WorkerData;
const words = new Int32Array(control);
const service = new GroupService((reply) => port.postMessage(reply));

port.on("message", (req: Request) => service.handle(req));

// Alive while the event loop turns; a caller blocked in synchronize() gives up only when this stops.
setInterval(() => Atomics.add(words, Control.Heartbeat, 1), HEARTBEAT_MS);

process.on("uncaughtException", (err) => {
  Atomics.store(words, Control.Dead, 1);
  service.failAll(err);
  process.exit(1);
});
