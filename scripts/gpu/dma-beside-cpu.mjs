// Whether the GPU's copy engines and the CPU optimizer's threads share one host memory bandwidth:
// pinned host-to-device and device-to-host copies (two streams, both directions at once) timed
// alone, the CPU threads' memmove bandwidth (as host-bandwidth.mjs) alone, then both together.
// If the copies keep their rate while the threads keep theirs, an optimizer split between the CPU
// and the GPU (streaming host state through the copy engines) could beat the CPU alone.
// Usage: node scripts/gpu/dma-beside-cpu.mjs [GiB per direction = 2] [threads = 16] [seconds = 3]
import { Worker } from "node:worker_threads";
import koffi from "koffi";

const gib = Number(process.argv[2] ?? 2);
const threads = Number(process.argv[3] ?? 16);
const seconds = Number(process.argv[4] ?? 3);
const bytes = gib * 2 ** 30;

const lib = koffi.load("libcudart.so.13");
const ok = (rc, what) => { if (rc !== 0) throw new Error(`${what}: CUDA error ${rc}`); };
const cudaSetDevice = lib.func("int cudaSetDevice(int)");
const cudaMalloc = lib.func("int cudaMalloc(_Out_ void **p, size_t n)");
const cudaHostAlloc = lib.func("int cudaHostAlloc(_Out_ void **p, size_t n, unsigned int flags)");
const cudaStreamCreate = lib.func("int cudaStreamCreateWithFlags(_Out_ void **s, unsigned int flags)");
const cudaMemcpyAsync = lib.func("int cudaMemcpyAsync(void *dst, void *src, size_t n, int kind, void *s)");
const cudaStreamSynchronize = lib.func("int cudaStreamSynchronize(void *s)");
const cudaStreamQuery = lib.func("int cudaStreamQuery(void *s)");

ok(cudaSetDevice(0), "cudaSetDevice");
const out = () => [null];
const alloc = (fn, ...rest) => { const p = out(); ok(fn(p, bytes, ...rest), fn.name); return p[0]; };
const hostUp = alloc(cudaHostAlloc, 0), hostDown = alloc(cudaHostAlloc, 0);
const devUp = alloc(cudaMalloc), devDown = alloc(cudaMalloc);
const s1 = out(), s2 = out();
ok(cudaStreamCreate(s1, 1), "stream"); ok(cudaStreamCreate(s2, 1), "stream");
const up = s1[0], down = s2[0];

// Copies for `seconds`, one direction or both; GB/s per direction.
function dma(dirs) {
  let n = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < seconds * 1e3) {
    if (dirs.includes("up")) ok(cudaMemcpyAsync(devUp, hostUp, bytes, 1, up), "H2D");
    if (dirs.includes("down")) ok(cudaMemcpyAsync(hostDown, devDown, bytes, 2, down), "D2H");
    ok(cudaStreamSynchronize(up), "sync"); ok(cudaStreamSynchronize(down), "sync");
    n++;
  }
  const s = (performance.now() - t0) / 1e3;
  return +((n * bytes) / s / 1e9).toFixed(1);
}

const body = `
const { parentPort, workerData } = require("node:worker_threads");
const a = new Float32Array(new SharedArrayBuffer(workerData.bytes)).fill(1);
const b = new Float32Array(new SharedArrayBuffer(workerData.bytes)).fill(2);
const stop = new Int32Array(workerData.stop);
parentPort.on("message", () => {
  let reps = 0; const t0 = performance.now();
  while (Atomics.load(stop, 0) === 0) { b.set(a); a.set(b); reps++; }
  parentPort.postMessage({ reps, s: (performance.now() - t0) / 1e3 });
});
parentPort.postMessage("ready");
`;
const stop = new SharedArrayBuffer(4);
const flag = new Int32Array(stop);
const workerBytes = 512 * 2 ** 20;
const workers = Array.from({ length: threads }, () => new Worker(body, { eval: true, workerData: { bytes: workerBytes, stop } }));
await Promise.all(workers.map((w) => new Promise((r) => w.once("message", r))));

async function cpu(during) {
  Atomics.store(flag, 0, 0);
  const done = Promise.all(workers.map((w) => new Promise((r) => { w.once("message", r); w.postMessage(0); })));
  await new Promise((r) => setTimeout(r, 200));
  const copies = during ? during() : await new Promise((r) => setTimeout(() => r(null), seconds * 1e3));
  Atomics.store(flag, 0, 1);
  const res = await done;
  const gbs = res.reduce((acc, { reps, s }) => acc + (reps * 4 * workerBytes) / s / 1e9, 0);
  return { cpu_gb_s: +gbs.toFixed(1), copies };
}

const rows = [];
rows.push({ case: "H2D alone", h2d_gb_s: dma(["up"]) });
rows.push({ case: "D2H alone", d2h_gb_s: dma(["down"]) });
rows.push({ case: "H2D+D2H", per_direction_gb_s: dma(["up", "down"]) });
rows.push({ case: `CPU ${threads} threads alone`, ...(await cpu(null)) });
rows.push({ case: `CPU ${threads} threads + H2D+D2H`, ...(await cpu(() => ({ per_direction_gb_s: dma(["up", "down"]) }))) });
rows.push({ case: `CPU ${threads} threads + H2D`, ...(await cpu(() => ({ h2d_gb_s: dma(["up"]) }))) });
for (const r of rows) console.log(JSON.stringify({ threads, gib, ...r }));
await Promise.all(workers.map((w) => w.terminate()));
void cudaStreamQuery;
