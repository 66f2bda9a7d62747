#!/usr/bin/env node
// Prints a bench-beside-anchor results file as a table: one row per run, anchor rows first in each pair.
import { readFileSync } from "node:fs";
const rows = readFileSync(process.argv[2], "utf8").trim().split("\n").map((l) => JSON.parse(l));
console.log("run                      step_ms   tok_s   tflops  peak_gib  loss");
for (const r of rows) {
  if (!r.result) continue;
  const name = r.anchor ? `torch ${r.anchor}` : `fulgur ${r.fulgur}`;
  const x = r.result;
  console.log(`${name.padEnd(24)} ${String(x.step_ms).padStart(7)} ${String(x.tok_s_gpu).padStart(7)} ${String(x.tflops_gpu).padStart(8)} ${String(x.peak_gib).padStart(9)}  ${x.loss}`);
}
