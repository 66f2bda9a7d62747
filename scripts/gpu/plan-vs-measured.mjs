#!/usr/bin/env node
// Prints a strategy's memory estimate for a GPT configuration as one JSON line, to set beside the
// peak a GPU run measured (the benchmark's `peak_gib`). The model is built on `meta`: nothing is
// allocated, so it runs anywhere. Build first (npm run build).
// Usage: node scripts/gpu/plan-vs-measured.mjs --config 1b --strategy single_device --micro-batch 4
//        [--precision bf16-mixed] [--devices 1] [--accumulate 1] [--options JSON]
//        (--config takes a named configuration or the anchor's "d,L,H,T": 4096,32,32,1024)
import { parseArgs } from "node:util";
import { StrategyRegistry } from "@fulgur/core";
import { GPT, GPT_CONFIGS, gptParamCount } from "@fulgur/nn";
import { withDevice } from "@fulgur/tensor";
import { registerStrategies } from "@fulgur/strategy-kit";
import "@fulgur/strategy-ddp";
import "@fulgur/strategy-fsdp";
import "@fulgur/strategy-zero";
import "@fulgur/strategy-pipeline";

const { values: a } = parseArgs({
  options: {
    config: { type: "string", default: "1b" },
    strategy: { type: "string", default: "single_device" },
    "micro-batch": { type: "string" },
    precision: { type: "string", default: "bf16-mixed" },
    devices: { type: "string", default: "1" },
    accumulate: { type: "string", default: "1" },
    options: { type: "string", default: "{}" },
  },
});

function gptConfig(spec) {
  if (Object.hasOwn(GPT_CONFIGS, spec)) return GPT_CONFIGS[spec];
  const parts = spec.split(",").map(Number);
  if (parts.length !== 4 || !parts.every((n) => Number.isInteger(n) && n > 0)) {
    throw new RangeError(`--config: got ${JSON.stringify(spec)}; expected one of ${Object.keys(GPT_CONFIGS).join(", ")} or "d,L,H,T" (e.g. 4096,32,32,1024)`);
  }
  const [dModel, nLayers, nHeads, seqLen] = parts;
  return { dModel, nLayers, nHeads, seqLen, vocabSize: 32000 };
}

registerStrategies();
const config = gptConfig(a.config);
const microBatch = Number(a["micro-batch"] ?? config.microBatch ?? 1);
const worldSize = Number(a.devices);
const module = withDevice("meta", () => new GPT(config));
const strategy = StrategyRegistry.create(a.strategy, JSON.parse(a.options));
const e = strategy.estimateMemory({ module, precision: a.precision, microBatch, accumulateGradBatches: Number(a.accumulate), worldSize });
const gib = (b) => Number((b / 2 ** 30).toFixed(3));
const parts = (b) => Object.fromEntries(Object.entries(b).map(([k, v]) => [k, gib(v)]));
console.log(
  JSON.stringify({
    config: a.config,
    params: gptParamCount(config),
    strategy: a.strategy,
    devices: worldSize,
    precision: a.precision,
    micro_batch: microBatch,
    estimate_gib: gib(e.perDevice.total),
    host_gib: gib(e.perHost.total),
    disk_gib: gib(e.disk),
    peak: e.peak?.where ?? null,
    per_device_gib: parts(e.perDevice),
    notes: e.notes,
  }),
);
