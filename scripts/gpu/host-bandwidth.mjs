// The host's memory bandwidth as the CPU optimizer's threads see it: each worker copies its own
// large shared buffers back and forth (TypedArray.set: memmove), counted as bytes read plus bytes
// written. Tells whether the offloaded AdamW (28 bytes an element) is bound by memory or by compute.
// Usage: node scripts/gpu/host-bandwidth.mjs [MiB per worker = 512] [threads, e.g. 1,4,8,16]
import { Worker } from "node:worker_threads";

const mib = Number(process.argv[2] ?? 512);
const counts = (process.argv[3] ?? "1,4,8,16").split(",").map(Number);
const body = `
const { parentPort, workerData } = require("node:worker_threads");
const n = workerData.bytes / 4;
const a = new Float32Array(new SharedArrayBuffer(workerData.bytes)).fill(1);
const b = new Float32Array(new SharedArrayBuffer(workerData.bytes)).fill(2);
parentPort.on("message", (reps) => {
  for (let r = 0; r < reps; r++) { b.set(a); a.set(b); }
  parentPort.postMessage(0);
});
parentPort.postMessage("ready");
`;
for (const threads of counts) {
  const workers = Array.from({ length: threads }, () => new Worker(body, { eval: true, workerData: { bytes: mib * 2 ** 20 } }));
  await Promise.all(workers.map((w) => new Promise((r) => w.once("message", r))));
  const run = (reps) => Promise.all(workers.map((w) => new Promise((r) => { w.once("message", r); w.postMessage(reps); })));
  await run(1);
  const reps = 4;
  const t0 = performance.now();
  await run(reps);
  const s = (performance.now() - t0) / 1e3;
  const bytes = threads * reps * 2 * 2 * mib * 2 ** 20;
  console.log(JSON.stringify({ threads, mib_per_worker: mib, gb_s: +(bytes / s / 1e9).toFixed(1) }));
  await Promise.all(workers.map((w) => w.terminate()));
}
