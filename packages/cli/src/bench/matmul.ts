/**
 * The CPU matmul micro-benchmark: one float32 [m, k] x [k, n] product through @fulgur/tensor's
 * matmul, the median of `repeats` timed runs after `warmup` untimed ones. A quick number to compare
 * machines and CPU backend changes by; the GPT benchmark is the one that counts.
 */
import { getBackend, randn, scope } from "@fulgur/tensor";

export interface MatmulBenchResult {
  readonly bench: "cpu_matmul";
  readonly m: number;
  readonly n: number;
  readonly k: number;
  readonly gflops: number;
}

export function cpuMatmulBench(m = 512, n = 512, k = 512, repeats = 5, warmup = 2): MatmulBenchResult {
  const backend = getBackend("cpu");
  const a = randn([m, k], { seed: 1 });
  const b = randn([k, n], { seed: 2 });
  const times: number[] = [];
  try {
    for (let i = 0; i < warmup + repeats; i++) {
      const t0 = performance.now();
      scope(() => {
        a.matmul(b);
        backend.synchronize();
      });
      const dt = performance.now() - t0;
      if (i >= warmup) times.push(dt);
    }
  } finally {
    a.dispose();
    b.dispose();
  }
  times.sort((x, y) => x - y);
  const median = times[Math.floor(times.length / 2)];
  const gflops = (2 * m * n * k) / (median / 1e3) / 1e9;
  return { bench: "cpu_matmul", m, n, k, gflops: Math.round(gflops * 100) / 100 };
}
