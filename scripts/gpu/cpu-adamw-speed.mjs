// The CPU AdamW step's speed on this machine's cores (offload's optimizer): one step over N fp32
// elements in 64 tensors of shared memory, for each thread count given. Prints one JSON line per
// count. Usage: node scripts/gpu/cpu-adamw-speed.mjs [millions of elements = 256] [threads, e.g. 1,4,8,16]
import { getBackend, setCpuOptimizerThreads, stopCpuOptimizerThreads, cpuOptimizerThreadedSteps } from "../../packages/tensor/dist/index.js";

const millions = Number(process.argv[2] ?? 256);
const counts = (process.argv[3] ?? "1,4,8,16").split(",").map(Number);
const b = getBackend("cpu");
const pieces = 64;
const per = Math.ceil((millions * 1e6) / pieces);
const view = (storage) => ({ storage, shape: [per], strides: [1], offset: 0 });
const make = () => Array.from({ length: pieces }, () => view(b.alloc("float32", per)));
const [p, g, m, v] = [make(), make(), make(), make()];
let step = 0;
for (const threads of counts) {
  setCpuOptimizerThreads(threads, { minElements: 0 });
  const hyper = () => ({ lr: 1e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: ++step });
  b.adamw(p, g, m, v, hyper()); // warm: starts the threads, touches the pages
  const before = cpuOptimizerThreadedSteps();
  const t0 = performance.now();
  const reps = 3;
  for (let r = 0; r < reps; r++) b.adamw(p, g, m, v, hyper());
  const ms = (performance.now() - t0) / reps;
  const elements = per * pieces;
  console.log(JSON.stringify({ threads, elements, ms_per_step: +ms.toFixed(1), ns_per_element: +((ms * 1e6) / elements).toFixed(2), gb_s: +((elements * 28) / ms / 1e6).toFixed(1), threaded: cpuOptimizerThreadedSteps() > before }));
}
stopCpuOptimizerThreads();
