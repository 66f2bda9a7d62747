#!/usr/bin/env node
/**
 * The short table of a bench/sweep.sh results file: per pair, PyTorch's and Fulgur's step ms,
 * tokens/s per GPU and peak GiB, Fulgur/PyTorch in tokens/s per GPU, the pair's target and whether
 * it is met (at least the target ratio, at no more peak memory); then the bubble of each pipeline
 * pair, skipped pairs with their reasons, and failed runs. Reads the LAST sweep of the file (the
 * lines after its last header), so one file can hold several sweeps.
 *
 *   node bench/summarize-sweep.mjs bench/results/FILE.jsonl
 */
import { readFileSync } from "node:fs";

const file = process.argv[2];
if (!file) {
  process.stderr.write("usage: node bench/summarize-sweep.mjs RESULTS.jsonl\n");
  process.exit(2);
}

const lines = readFileSync(file, "utf8")
  .split("\n")
  .filter((l) => l.trim() !== "")
  .map((l, i) => {
    try {
      return JSON.parse(l);
    } catch {
      throw new Error(`${file}:${i + 1}: not a JSON line`);
    }
  });
const isHeader = (o) => o.pair === undefined && typeof o.command === "string" && o.date !== undefined;
const start = lines.findLastIndex(isHeader);
if (start < 0) {
  process.stderr.write(`${file}: no sweep header line (date, device, command)\n`);
  process.exit(1);
}
const header = lines[start];
const body = lines.slice(start + 1);

const table = new Map((header.pairs ?? []).map((p) => [p.pair, p]));
const byPair = new Map();
for (const o of body) {
  if (typeof o.pair !== "string") continue;
  if (!byPair.has(o.pair)) byPair.set(o.pair, {});
  const e = byPair.get(o.pair);
  if (o.skipped !== undefined) e.skipped = o;
  else if (o.anchor !== undefined) e.anchor = o;
  else if (o.fulgur !== undefined) e.fulgur = o;
}

const num = (v, digits) => (typeof v === "number" && Number.isFinite(v) ? v.toLocaleString("en-US", { maximumFractionDigits: digits }) : "—");
const dev = header.device ?? {};
const devText = dev.gpus > 0 ? `${dev.name} (driver ${dev.driver}), ${header.devices} of ${dev.gpus} GPU(s)` : `CPU (${dev.cpu ?? "?"}), ${header.devices} rank(s)`;
const out = [];
out.push(`Sweep of ${header.date}: ${devText}, config ${header.config}${header.dry_run ? ", DRY RUN (anchor not run, Fulgur on the CPU)" : ""}`);
out.push(`command: ${header.command}`);
out.push("");
out.push("| pair | PyTorch | Fulgur | step ms PT | step ms F | tok/s/GPU PT | tok/s/GPU F | peak GiB PT | peak GiB F | F/PT | target | verdict |");
out.push("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|");

const notes = [];
for (const [pair, e] of byPair) {
  const row = table.get(pair) ?? {};
  const target = row.target;
  if (e.skipped) {
    out.push(`| ${pair} | ${e.skipped.anchor ?? row.anchor ?? "?"} | ${e.skipped.skipped} | | | | | | | | ${target ? `${target}×` : ""} | skipped |`);
    notes.push(`${pair}: skipped: ${e.skipped.reason}`);
    continue;
  }
  const a = e.anchor?.result;
  const f = e.fulgur?.result;
  let ratio = "—";
  let verdict = "—";
  if (a && f && a.tok_s_gpu > 0) {
    const r = f.tok_s_gpu / a.tok_s_gpu;
    ratio = `${r.toFixed(2)}×`;
    const slow = target !== undefined && r < target;
    const heavy = typeof f.peak_gib === "number" && typeof a.peak_gib === "number" && f.peak_gib > a.peak_gib;
    verdict = slow || heavy ? `misses (${[slow && "speed", heavy && "memory"].filter(Boolean).join(", ")})` : target !== undefined ? "meets" : "—";
  } else if (e.anchor?.dry_run) {
    verdict = "dry run";
  } else {
    verdict = "incomplete";
  }
  out.push(
    `| ${pair} | ${e.anchor?.anchor ?? row.anchor ?? "?"} | ${e.fulgur?.fulgur ?? row.fulgur ?? "?"} | ${num(a?.step_ms, 1)} | ${num(f?.step_ms, 1)} | ` +
      `${num(a?.tok_s_gpu, 0)} | ${num(f?.tok_s_gpu, 0)} | ${num(a?.peak_gib, 2)} | ${num(f?.peak_gib, 2)} | ${ratio} | ${target ? `${target}×` : ""} | ${verdict} |`,
  );
  if (e.anchor?.dry_run) notes.push(`${pair}: anchor not run (dry run); would run: ${e.anchor.would_run}`);
  if (e.anchor?.error) notes.push(`${pair}: PyTorch run failed: ${e.anchor.error}`);
  if (e.fulgur?.error) notes.push(`${pair}: Fulgur run failed: ${e.fulgur.error}`);
  if (!e.anchor) notes.push(`${pair}: no PyTorch line`);
  if (!e.fulgur) notes.push(`${pair}: no Fulgur line`);
  if (a && f && a.devices !== f.devices) notes.push(`${pair}: PyTorch ran on ${a.devices} device(s), Fulgur on ${f.devices}`);
  if (row.pipeline) {
    const bubble = f ? Object.entries(f).filter(([k]) => k.toLowerCase().includes("bubble")) : [];
    notes.push(`${pair}: bubble: ${bubble.length ? bubble.map(([k, v]) => `${k} ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ") : "not reported"}`);
    if (f && f.micro_batches === undefined) {
      notes.push(`${pair}: the Fulgur line has no micro_batches (the anchor ran PP_MICRO=${header.pp_micro}, counting B·M·T/world tokens per GPU); check the token counts match before reading F/PT`);
    } else if (f && a && f.micro_batches !== a.micro_batches) {
      notes.push(`${pair}: micro-batches differ: PyTorch ${a.micro_batches}, Fulgur ${f.micro_batches}`);
    }
  }
}
for (const row of header.pairs ?? []) if (!byPair.has(row.pair)) notes.push(`${row.pair}: no line (the sweep stopped before it?)`);

if (notes.length) out.push("", ...notes.map((n) => `- ${n}`));
out.push("", "Targets: Fulgur/PyTorch tokens/s per GPU at least the target, at no more peak memory (bench/SWEEP.md).");
process.stdout.write(out.join("\n") + "\n");
