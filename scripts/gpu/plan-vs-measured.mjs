#!/usr/bin/env node
// Prints a strategy's memory estimate for a GPT configuration as one JSON line, to set beside the
// peak a GPU run measured (the benchmark's `peak_gib`). The model is built on `meta`: nothing is
// allocated, so it runs anywhere. Build first (npm run build).
// Usage: node scripts/gpu/plan-vs-measured.mjs --config 1b --strategy single_device --micro-batch 4
//        [--precision bf16-mixed] [--devices 1] [--accumulate 1] [--options JSON]
//        (--config takes a named configuration or the anchor's "d,L,H,T": 4096,32,32,1024)
//        [--size d,L,H,T,B]   the anchor's five numbers, micro-batch included: 4096,32,32,1024,1
//        [--issue15]          the lines issue 15 sets beside measured GPU peaks, all bf16-mixed: 1b
//                             single_device, 1b FSDP at world 1, 1b deepspeed_stage_3_offload, and
//                             4096,32,32,1024,1 (6.71B) under deepspeed_stage_3_offload
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
    size: { type: "string" },
    issue15: { type: "boolean", default: false },
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

function sizeConfig(spec) {
  const parts = spec.split(",").map(Number);
  if (parts.length !== 5 || !parts.every((n) => Number.isInteger(n) && n > 0)) {
    throw new RangeError(`--size: got ${JSON.stringify(spec)}; expected five positive integers "d,L,H,T,B" (e.g. 4096,32,32,1024,1)`);
  }
  const [dModel, nLayers, nHeads, seqLen, microBatch] = parts;
  return { dModel, nLayers, nHeads, seqLen, vocabSize: 32000, microBatch };
}

const gib = (b) => Number((b / 2 ** 30).toFixed(3));
const parts = (b) => Object.fromEntries(Object.entries(b).map(([k, v]) => [k, gib(v)]));

/** One estimate as one JSON line. */
function printEstimate({ label, config, strategyName, options, precision, microBatch, worldSize, accumulate }) {
  const module = withDevice("meta", () => new GPT(config));
  const strategy = StrategyRegistry.create(strategyName, options);
  const e = strategy.estimateMemory({ module, precision, microBatch, accumulateGradBatches: accumulate, worldSize, copiesCrossBus: true });
  console.log(
    JSON.stringify({
      config: label,
      params: gptParamCount(config),
      strategy: strategyName,
      devices: worldSize,
      precision,
      micro_batch: microBatch,
      estimate_gib: gib(e.perDevice.total),
      host_gib: gib(e.perHost.total),
      disk_gib: gib(e.disk),
      peak: e.peak?.where ?? null,
      per_device_gib: parts(e.perDevice),
      per_host_gib: parts(e.perHost),
      notes: e.notes,
    }),
  );
}

registerStrategies();
if (a.issue15) {
  const b = { precision: "bf16-mixed", worldSize: 1, accumulate: 1, options: {} };
  const oneB = { ...b, label: "1b", config: GPT_CONFIGS["1b"], microBatch: 4 };
  printEstimate({ ...oneB, strategyName: "single_device" });
  printEstimate({ ...oneB, strategyName: "fsdp" });
  printEstimate({ ...oneB, strategyName: "deepspeed_stage_3_offload" });
  const big = sizeConfig("4096,32,32,1024,1");
  printEstimate({ ...b, label: "4096,32,32,1024,1", config: big, microBatch: big.microBatch, strategyName: "deepspeed_stage_3_offload" });
} else {
  const config = a.size ? sizeConfig(a.size) : gptConfig(a.config);
  printEstimate({
    label: a.size ?? a.config,
    config,
    strategyName: a.strategy,
    options: JSON.parse(a.options),
    precision: a.precision,
    microBatch: Number(a["micro-batch"] ?? config.microBatch ?? 1),
    worldSize: Number(a.devices),
    accumulate: Number(a.accumulate),
  });
}
