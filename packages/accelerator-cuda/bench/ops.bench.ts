/**
 * Micro benchmark of the CUDA backend's hot ops at the `1b` GPT's shapes (DESIGN.md: d_model 2048,
 * 16 heads, seq 1024, vocab 32000, micro-batch 4): matmul (bf16, the MLP up-projection), attention
 * forward + backward, layer norm, cross entropy, and one AdamW step. Each op is timed with CUDA
 * events around `repeats` back-to-back launches after warm-up; the median of `trials` is reported,
 * one JSON line per op: {op, shape, dtype, ms, min_ms, tflops | gbps}.
 *
 * Usage: npx tsx bench/ops.bench.ts [--trials 7] [--repeats 10] [--device cuda:0]
 */
import type { DType, View } from "@fulgur/tensor";
import { CudaEvent, cudaBackend } from "../src/index";
import { itemsizeOf } from "../src/ops/dtypes";

function arg(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1] : fallback;
}

const trials = Number(arg("trials", "7"));
const repeats = Number(arg("repeats", "10"));
const b = cudaBackend(arg("device", "cuda:0"));
const live: View[] = [];

function tensor(shape: number[], dtype: DType, kind: "normal" | "uniform" = "normal", scale = 1): View {
  const n = shape.reduce((x, y) => x * y, 1);
  const strides = shape.map((_, i) => shape.slice(i + 1).reduce((x, y) => x * y, 1));
  const v: View = { storage: b.alloc(dtype, n), shape, strides, offset: 0 };
  b.random(kind, v, { seed: 42n, offset: live.length * 1_000_000_000 });
  if (scale !== 1) b.unary("mul_scalar", v, v, scale);
  live.push(v);
  return v;
}

function median(xs: number[]): number {
  const s = [...xs].sort((x, y) => x - y);
  return s[Math.floor(s.length / 2)];
}

function time(fn: () => void): { ms: number; minMs: number } {
  const start = CudaEvent.create(true);
  const end = CudaEvent.create(true);
  const stream = b.ctx.compute;
  for (let i = 0; i < 2; i++) fn();
  b.synchronize();
  const ms: number[] = [];
  for (let t = 0; t < trials; t++) {
    start.record(stream);
    for (let r = 0; r < repeats; r++) fn();
    end.record(stream);
    end.synchronize();
    ms.push(end.elapsedSince(start) / repeats);
  }
  b.synchronize();
  start.destroy();
  end.destroy();
  return { ms: median(ms), minMs: Math.min(...ms) };
}

function report(op: string, shape: string, dtype: DType, t: { ms: number; minMs: number }, extra: Record<string, number>): void {
  const round = (x: number) => Math.round(x * 1000) / 1000;
  const out: Record<string, unknown> = { op, shape, dtype, ms: round(t.ms), min_ms: round(t.minMs) };
  for (const [k, v] of Object.entries(extra)) out[k] = round(v);
  console.log(JSON.stringify(out));
}

const B = 4;
const T = 1024;
const C = 2048;
const H = 16;
const V = 32000;
const N = B * T;

{
  const x = tensor([N, C], "bfloat16");
  const w = tensor([4 * C, C], "bfloat16", "normal", 0.02);
  const bias = tensor([4 * C], "bfloat16");
  const wt: View = { ...w, shape: [C, 4 * C], strides: [1, C] };
  const out = tensor([N, 4 * C], "bfloat16");
  const t = time(() => b.matmul(x, wt, out, { bias, gelu: true }));
  report("matmul+bias+gelu", `${N}x${C} @ ${C}x${4 * C}`, "bfloat16", t, { tflops: (2 * N * C * 4 * C) / (t.ms * 1e9) });
}

{
  const D = C / H;
  const mk = () => tensor([B, H, T, D], "bfloat16");
  const [q, k, v, out, gout, gq, gk, gv] = [mk(), mk(), mk(), mk(), mk(), mk(), mk(), mk()];
  const lse = tensor([B, H, T], "float32");
  const scale = 1 / Math.sqrt(D);
  const fwd = time(() => b.attention(q, k, v, out, lse, true, scale));
  // Causal: half of the 4 * B * H * T^2 * D multiply-adds of a full attention forward.
  const fwdFlops = 2 * B * H * T * T * D;
  report("attention fwd (causal)", `B${B} H${H} T${T} D${D}`, "bfloat16", fwd, { tflops: fwdFlops / (fwd.ms * 1e9) });
  const both = time(() => {
    b.attention(q, k, v, out, lse, true, scale);
    b.attentionBackward(q, k, v, out, lse, gout, gq, gk, gv, true, scale);
  });
  report("attention fwd+bwd (causal)", `B${B} H${H} T${T} D${D}`, "bfloat16", both, { tflops: (3.5 * fwdFlops) / (both.ms * 1e9) });
}

{
  const x = tensor([N, C], "bfloat16");
  const w = tensor([C], "float32");
  const bias = tensor([C], "float32");
  const out = tensor([N, C], "bfloat16");
  const mean = tensor([N], "float32");
  const rstd = tensor([N], "float32");
  const t = time(() => b.layerNorm(x, w, bias, 1e-5, out, mean, rstd));
  report("layer_norm fwd", `${N}x${C}`, "bfloat16", t, { gbps: (2 * N * C * itemsizeOf("bfloat16")) / (t.ms * 1e6) });
  // The GPT's case under bf16-mixed: a float32 residual stream in, the bf16 the next matmul reads out.
  const x32 = tensor([N, C], "float32");
  const t32 = time(() => b.layerNorm(x32, w, bias, 1e-5, out, mean, rstd));
  report("layer_norm fwd f32->bf16", `${N}x${C}`, "float32", t32, { gbps: (N * C * (4 + 2)) / (t32.ms * 1e6) });
}

{
  const logits = tensor([N, V], "bfloat16");
  const targets: View = { storage: b.fromHost(Int32Array.from({ length: N }, (_, i) => (i * 7919) % V), "int32"), shape: [N], strides: [1], offset: 0 };
  live.push(targets);
  const loss = tensor([N], "float32");
  const lse = tensor([N], "float32");
  const gloss = tensor([1], "float32");
  const glogits = tensor([N, V], "bfloat16");
  const t = time(() => {
    b.crossEntropy(logits, targets, -100, loss, lse);
    b.crossEntropyBackward(logits, targets, lse, gloss, -100, glogits);
  });
  report("cross_entropy fwd+bwd", `${N}x${V}`, "bfloat16", t, { gbps: (3 * N * V * itemsizeOf("bfloat16")) / (t.ms * 1e6) });
}

{
  // One flat buffer of 100M fp32 parameters (an eighth of the 1b model's 0.94B: memory stays modest).
  const P = 100_000_000;
  const p = tensor([P], "float32", "normal", 0.02);
  const g = tensor([P], "float32", "normal", 1e-3);
  const m = tensor([P], "float32", "normal", 1e-3);
  const v = tensor([P], "float32", "uniform", 1e-6);
  let step = 1;
  const t = time(() => b.adamw([p], [g], [m], [v], { lr: 3e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: step++ }));
  report("adamw", `${P} params`, "float32", t, { gbps: (7 * P * 4) / (t.ms * 1e6) });
}

for (const v of live) b.free(v.storage);
b.synchronize();
const stats = b.memoryStats();
console.log(JSON.stringify({ op: "memory", peak_gib: Math.round((stats.peak / 2 ** 30) * 100) / 100, reserved_gib: Math.round((stats.reserved / 2 ** 30) * 100) / 100 }));
