#!/usr/bin/env node
// Pairs an ncu per-kernel CSV (gpu__time_duration.sum) with a FULGUR_CUDA_TRACE file of the same
// run and prints where one training step's GPU time goes: per kernel, and per op (the innermost
// @fulgur/tensor or @fulgur/nn frame that asked for the launch). Kernels launched by cuBLASLt are
// charged to the cuBLASLt call before them. The step is the launches between the last two AdamW
// launches (run the benchmark with --warmup 1 --steps 1).
// Usage: node scripts/gpu/attribute-profile.mjs ncu.csv trace.jsonl
import { readFileSync } from "node:fs";

const [csvPath, tracePath] = process.argv.slice(2);
const rows = readFileSync(csvPath, "utf8").split("\n").filter((l) => l.startsWith('"'));
const header = JSON.parse(`[${rows[0]}]`);
const col = (n) => header.indexOf(n);
// One CSV row per (kernel launch, metric): group them by launch ID.
const byId = new Map();
for (const r of rows.slice(1).map((l) => JSON.parse(`[${l}]`))) {
  const id = r[col("ID")];
  const k = byId.get(id) ?? { name: r[col("Kernel Name")], ns: 0, metrics: {} };
  const v = Number(String(r[col("Metric Value")]).replace(/,/g, ""));
  if (r[col("Metric Name")] === "gpu__time_duration.sum") k.ns = v;
  else k.metrics[r[col("Metric Name")]] = v;
  byId.set(id, k);
}
const kernels = [...byId.values()];
const trace = readFileSync(tracePath, "utf8").split("\n").filter(Boolean).map((l) => JSON.parse(l));

// Walk both lists: our kernels match by name; a GEMM kernel (nvjet, cutlass, xmma, gemm) takes the
// next cuBLASLt call of the trace; cuBLASLt's helper kernels (bias-gradient reductions, split-K
// reductions) belong to the call before them.
const ours = new Set(trace.filter((e) => !e.kernel.startsWith("cublasLt:")).map((e) => e.kernel));
const isGemm = (name) => /nvjet|cutlass|xmma|gemm|sm90_|sm80_/i.test(name) && !/globalKernel|splitK|reduce/i.test(name);
const pairs = [];
let t = 0;
let lastLt = { kernel: "?", frames: [] };
for (const k of kernels) {
  if (ours.has(k.name)) {
    while (t < trace.length && trace[t].kernel !== k.name) t++;
    pairs.push({ k, e: t < trace.length ? trace[t] : { kernel: "?", frames: [] } });
    t++;
  } else if (isGemm(k.name)) {
    while (t < trace.length && !trace[t].kernel.startsWith("cublasLt:")) t++;
    lastLt = t < trace.length ? trace[t] : { kernel: "?", frames: [] };
    pairs.push({ k, e: lastLt });
    t++;
  } else pairs.push({ k, e: { ...lastLt, kernel: `${lastLt.kernel} (+${k.name.replace(/^void /, "").slice(0, 40)})` } });
}
const adam = pairs.map((p, i) => (p.k.name === "adamw_multi" ? i : -1)).filter((i) => i >= 0);
const step = adam.length >= 2 ? pairs.slice(adam[adam.length - 2] + 1, adam[adam.length - 1] + 1) : pairs;

function opOf(frames) {
  const f = frames.find((x) => /packages\/(tensor|nn|trainer)\/src/.test(x) && !/ops\/util\.ts|memory\.ts|autograd\.ts|gradMode\.ts/.test(x));
  const chain = frames
    .filter((x) => /packages\/(tensor|nn|trainer)\/src/.test(x))
    .map((x) => x.replace(/ \(.*\/packages\//, " (").replace(/\)$/, ")"))
    .slice(0, 4)
    .join(" < ");
  return { op: f ? f.split(" (")[0] : "?", chain };
}

const total = step.reduce((s, p) => s + p.k.ns, 0);
const by = (keyOf) => {
  const m = new Map();
  for (const p of step) {
    const key = keyOf(p);
    const v = m.get(key) ?? { ns: 0, n: 0 };
    v.ns += p.k.ns;
    v.n++;
    m.set(key, v);
  }
  return [...m.entries()].sort((a, b) => b[1].ns - a[1].ns);
};
console.log(`step: ${step.length} kernels, ${(total / 1e6).toFixed(2)} ms of GPU time`);
console.log("\n## by kernel");
for (const [k, v] of by((p) => (p.e.kernel.startsWith("cublasLt") ? "cuBLASLt" : p.k.name)).slice(0, 25)) {
  console.log(`${(v.ns / 1e6).toFixed(3).padStart(8)} ms ${String(v.n).padStart(5)}x  ${k}`);
}
console.log("\n## by kernel and calling chain");
for (const [k, v] of by((p) => `${p.e.kernel.startsWith("cublasLt") ? p.e.kernel : p.k.name}  ${opOf(p.e.frames).chain}`).slice(0, 60)) {
  console.log(`${(v.ns / 1e6).toFixed(3).padStart(8)} ms ${String(v.n).padStart(5)}x  ${k}`);
}

// Other metrics (registers, occupancy, DRAM throughput), averaged per kernel name, when collected.
const withMetrics = step.filter((p) => Object.keys(p.k.metrics).length > 0);
if (withMetrics.length > 0) {
  console.log("\n## other metrics, mean per kernel");
  const m = new Map();
  for (const p of withMetrics) {
    const e = m.get(p.k.name) ?? { n: 0, sums: {} };
    e.n++;
    for (const [k, v] of Object.entries(p.k.metrics)) e.sums[k] = (e.sums[k] ?? 0) + v;
    m.set(p.k.name, e);
  }
  for (const [name, e] of m) {
    const parts = Object.entries(e.sums).map(([k, v]) => `${k.split("__")[1] ?? k}=${(v / e.n).toFixed(1)}`);
    console.log(`${name.slice(0, 40).padEnd(40)} ${parts.join("  ")}`);
  }
}
