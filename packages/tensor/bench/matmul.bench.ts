/**
 * CPU matmul throughput: 512x512x512 float32, median of several runs after warm-up, printed as one
 * JSON line so CI and the CLI can track it. Run with `npx tsx bench/matmul.bench.ts`.
 */
import type { View } from "../src/backend";
import { cpuBackend } from "../src/cpu";

const m = 512;
const n = 512;
const k = 512;
const be = cpuBackend();

function randomView(rows: number, cols: number, seed: number): View {
  const data = new Float32Array(rows * cols);
  let s = seed >>> 0;
  for (let i = 0; i < data.length; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    data[i] = s / 4294967296 - 0.5;
  }
  return { storage: be.fromHost(data, "float32"), shape: [1, rows, cols], strides: [rows * cols, cols, 1], offset: 0 };
}

const a = randomView(m, k, 1);
const b = randomView(k, n, 2);
const out: View = { storage: be.alloc("float32", m * n), shape: [1, m, n], strides: [m * n, n, 1], offset: 0 };

for (let i = 0; i < 3; i++) be.matmul(a, b, out);
const times: number[] = [];
for (let i = 0; i < 7; i++) {
  const t0 = performance.now();
  be.matmul(a, b, out);
  times.push(performance.now() - t0);
}
times.sort((x, y) => x - y);
const median = times[times.length >> 1];
const gflops = (2 * m * n * k) / (median * 1e-3) / 1e9;
console.log(JSON.stringify({ bench: "cpu_matmul", m, n, k, gflops: Math.round(gflops * 100) / 100 }));
