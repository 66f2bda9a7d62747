// The offloaded AdamW step split between the CPU's threads and the GPU ([Note: the step streamed
// through the device] in packages/sharding/src/deviceStep.ts), as the sharding engine runs it: host
// state in "units" of 201M elements (a 6.71B GPT block) in shared memory, the first units' share
// on the GPU with their gradients already there (as backward leaves them, [Note: gradients beside
// the streamed step]), the rest on the CPU's threads. One step timed per share (rounded to whole
// units), one JSON line each; then the half-streamed result checked against the CPU alone.
// Usage: node scripts/gpu/streamed-step-speed.mjs [millions of elements = 1600] [shares = 0,0.375,0.5,0.625,0.75]
import { fromHost, fusedAdamW, routeAdamW, sharedHostMemory, stopCpuOptimizerThreads, zeros } from "../../packages/tensor/dist/index.js";
import { registerCudaBackend } from "../../packages/accelerator-cuda/dist/index.js";
import { DeviceStreamedStep } from "../../packages/sharding/dist/index.js";
const millions = Number(process.argv[2] ?? 1600);
const shares = (process.argv[3] ?? "0,0.375,0.5,0.625,0.75").split(",").map(Number);
registerCudaBackend();
const per = 201_326_592;
const count = Math.max(1, Math.round((millions * 1e6) / per));
const host = (fill) => sharedHostMemory(() => {
  const t = zeros([per], { dtype: "float32", device: "cpu" });
  if (fill !== 0) t.fill_(fill);
  return t;
});
const entries = Array.from({ length: count }, (_, k) => ({ p: host(0.01 * (k + 1)), g: host(0.001), m: host(0), v: host(0) }));
let step = 0;
const elements = count * per;
for (const share of shares) {
  // The first units take the share; their gradients wait on the GPU, as backward leaves them.
  const streamedUnits = share > 0 ? Math.max(1, Math.round(share * count)) : 0;
  const grads = entries.map((e, k) => (k < streamedUnits ? e.g.to("cuda:0") : e.g));
  const streamed = new DeviceStreamedStep("cuda:0", 0, () => false);
  const call = () => ({
    params: entries.map((e) => e.p), grads, expAvg: entries.map((e) => e.m), expAvgSq: entries.map((e) => e.v),
    hyper: { lr: 1e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: ++step },
  });
  const run = () => (streamedUnits > 0 ? routeAdamW(streamed.route, () => fusedAdamW(call())) : fusedAdamW(call()));
  const tPin = performance.now();
  run(); // warm: pins the pages, starts the threads, compiles the kernel
  const warmMs = performance.now() - tPin;
  const reps = 3;
  const t0 = performance.now();
  for (let r = 0; r < reps; r++) run();
  const ms = (performance.now() - t0) / reps;
  streamed.unpinAll();
  for (const g of grads) if (g.device !== "cpu") g.dispose();
  console.log(JSON.stringify({ share: streamedUnits / count, units_on_gpu: streamedUnits, elements, ms_per_step: +ms.toFixed(1), warm_ms: +warmMs.toFixed(0), per_6_71b_s: +((ms / elements) * 6.71e9 / 1e3).toFixed(3) }));
}
// The same update on both sides: a short fresh run, half streamed, against the CPU alone.
const n = 4 * (1 << 24) + 12345;
const t = (v) => sharedHostMemory(() => fromHost(Float32Array.from({ length: n }, (_, i) => Math.sin(i * 0.001 + v)), [n], "float32"));
const a = { p: t(1), g: t(2), m: t(3), v: sharedHostMemory(() => t(4).abs()) };
const b = { p: t(1), g: t(2), m: t(3), v: sharedHostMemory(() => t(4).abs()) };
const one = (e) => ({ params: [e.p], grads: [e.g], expAvg: [e.m], expAvgSq: [e.v], hyper: { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: 1 } });
const check = new DeviceStreamedStep("cuda:0", 0.5, () => true);
routeAdamW(check.route, () => fusedAdamW(one(a)));
fusedAdamW(one(b));
check.unpinAll();
// The two sides round differently (the GPU's division and square root), so: the worst difference
// relative to the value, where the value is not near zero (|y| > 1e-3), and the worst absolute one.
const worst = { relative: 0, absolute: 0 };
for (const k of ["p", "m", "v"]) {
  const x = a[k].toHost(), y = b[k].toHost();
  for (let i = 0; i < n; i++) {
    const d = Math.abs(x[i] - y[i]);
    worst.absolute = Math.max(worst.absolute, d);
    if (Math.abs(y[i]) > 1e-3) worst.relative = Math.max(worst.relative, d / Math.abs(y[i]));
  }
}
console.log(JSON.stringify({ check: "half streamed vs CPU alone", elements: n, streamed: check.streamedElements, worst_relative_difference: worst.relative, worst_absolute_difference: worst.absolute }));
stopCpuOptimizerThreads();
