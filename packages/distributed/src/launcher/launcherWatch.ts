/**
 * No orphans: a rank exits within seconds when the process that started it is gone, however it
 * went (SIGKILL, the OOM killer, a crash), and whether or not the rank ever prints anything.
 *
 * [Note: launcher watch] The launcher gives every rank one extra stdio slot, a pipe at fd 3
 * (`LAUNCHER_WATCH_FD`), and never writes to it. The kernel closes the launcher's end when the
 * launcher dies, so the rank's end reads end-of-file: no polling, no output needed, no pid reuse
 * to worry about. The rank learns the fd and the launcher's pid from two variables
 * (`FULGUR_LAUNCHER_FD`, `FULGUR_LAUNCHER_PID`).
 *
 * The watcher is installed in every rank without the rank's script doing anything: the launcher
 * starts node with `--import <data: URL>` (see `launcherWatchImport`), a few lines that run before
 * the script. They remove the two variables (so the rank's own children do not mistake whatever
 * their fd 3 is for the launcher's pipe) and start a worker thread that reads the pipe. A worker,
 * not the main thread, because a rank's main thread may not return to the event loop for a long
 * time: a CPU step, a collective waiting in `Atomics.wait` (DESIGN.md decision 14), a deadlock.
 * The worker is unref'd, so it never keeps a rank alive that has finished.
 *
 * When the pipe ends, the worker writes "rank R: the launcher (pid P) is gone; exiting" to fd 2
 * directly (the main thread may be busy; the message is lost if stderr was the dead launcher's
 * pipe, which is why nothing depends on it), sends the rank SIGTERM (which ends a Node process at
 * once unless the script handles it, and lets a handler clean up if it does) and SIGKILL
 * `LAUNCHER_GONE_KILL_MS` later.
 *
 * The code is a string rather than a file because the package ships as one bundle: a data: URL
 * needs no path to resolve, works under tsx and from dist alike, and runs for any script, also one
 * that never imports Fulgur.
 */

/** The rank's fd of the pipe it watches (stdio slot 3: the first after stdin, stdout, stderr). */
export const LAUNCHER_WATCH_FD = 3;
export const LAUNCHER_FD_VAR = "FULGUR_LAUNCHER_FD";
export const LAUNCHER_PID_VAR = "FULGUR_LAUNCHER_PID";
/** Between the SIGTERM a rank sends itself when its launcher is gone and the SIGKILL. */
export const LAUNCHER_GONE_KILL_MS = 3_000;

/** The variables that tell a rank to watch its launcher: set by the process that spawns it. */
export function launcherWatchEnvironment(fd: number = LAUNCHER_WATCH_FD): Record<string, string> {
  return { [LAUNCHER_FD_VAR]: String(fd), [LAUNCHER_PID_VAR]: String(process.pid) };
}

// Runs in the worker thread (an eval'd worker is a CommonJS script). Any event that ends the
// socket means the launcher's end is closed; the launcher never writes, data is ignored.
const WATCHER = `
const { workerData } = require("node:worker_threads");
const { writeSync } = require("node:fs");
const { Socket } = require("node:net");
const { fd, pid, rank, killMs } = workerData;
let gone = false;
const exit = () => {
  if (gone) return;
  gone = true;
  try { writeSync(2, "rank " + rank + ": the launcher (pid " + pid + ") is gone; exiting\\n"); } catch {}
  setTimeout(() => process.kill(process.pid, "SIGKILL"), killMs);
  process.kill(process.pid, "SIGTERM");
};
let socket;
try {
  socket = new Socket({ fd, readable: true, writable: false });
} catch (err) {
  try { writeSync(2, "rank " + rank + ": cannot watch the launcher through fd " + fd + ": " + err.message + "\\n"); } catch {}
}
if (socket) {
  socket.on("data", () => {});
  socket.on("end", exit);
  socket.on("close", exit);
  socket.on("error", exit);
}
`;

// Runs in the rank's main thread before its script (node --import). Errors must never stop the
// script: the watch is a safety net, not a precondition of training.
const BOOTSTRAP = `
import { Worker } from "node:worker_threads";
const env = process.env;
const fd = Number(env.${LAUNCHER_FD_VAR});
const pid = env.${LAUNCHER_PID_VAR};
delete env.${LAUNCHER_FD_VAR};
delete env.${LAUNCHER_PID_VAR};
if (Number.isInteger(fd) && fd > 2 && pid) {
  try {
    const worker = new Worker(${JSON.stringify(WATCHER)}, {
      eval: true,
      workerData: { fd, pid, rank: env.RANK ?? "?", killMs: ${LAUNCHER_GONE_KILL_MS} },
      stdout: true,
      stderr: true,
    });
    worker.on("error", () => {});
    worker.unref();
  } catch {}
}
`;

/** The `--import` specifier that installs the watcher in a node process before its script runs. */
export function launcherWatchImport(): string {
  return `data:text/javascript,${encodeURIComponent(BOOTSTRAP.trim())}`;
}
