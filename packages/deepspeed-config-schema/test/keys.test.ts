/**
 * The hand-written types and the JSON Schema stay in step: every object the schema closes with
 * additionalProperties: false has a key list in CONFIG_KEYS (each list is tied to its interface
 * at compile time, see src/keys.ts), and the list equals the schema's property names.
 */
import { describe, expect, it } from "vitest";
import { CONFIG_KEYS, type JsonSchema, deepspeedConfigSchema } from "../src/index.js";

type KeyListName = keyof typeof CONFIG_KEYS;

/** Schema location (a JSON pointer into the schema file) → the key list of its interface. */
const LISTS: Readonly<Record<string, KeyListName>> = {
  "": "deepSpeedConfig",
  "/$defs/optimizer": "optimizerConfig",
  "/$defs/adamParams": "adamParams",
  "/$defs/lambParams": "lambParams",
  "/$defs/oneBitAdamParams": "oneBitAdamParams",
  "/$defs/zeroOneAdamParams": "zeroOneAdamParams",
  "/$defs/oneBitLambParams": "oneBitLambParams",
  "/$defs/lionParams": "lionParams",
  "/$defs/adagradParams": "adagradParams",
  "/$defs/sgdParams": "sgdParams",
  "/$defs/scheduler": "schedulerConfig",
  "/$defs/warmupLRParams": "warmupLRParams",
  "/$defs/warmupDecayLRParams": "warmupDecayLRParams",
  "/$defs/warmupCosineLRParams": "warmupCosineLRParams",
  "/$defs/oneCycleParams": "oneCycleParams",
  "/$defs/lrRangeTestParams": "lRRangeTestParams",
  "/$defs/fp16": "fp16Config",
  "/$defs/bf16": "bf16Config",
  "/$defs/amp": "ampConfig",
  "/$defs/zeroOptimization": "zeroOptimizationConfig",
  "/$defs/offloadParam": "offloadParamConfig",
  "/$defs/offloadOptimizer": "offloadOptimizerConfig",
  "/$defs/zeroppLocoParam": "zeroppLocoParam",
  "/$defs/activationCheckpointing": "activationCheckpointingConfig",
  "/$defs/aio": "aioConfig",
  "/$defs/flopsProfiler": "flopsProfilerConfig",
  "/$defs/autotuning": "autotuningConfig",
  "/$defs/autotuningModelInfo": "autotuningModelInfo",
  "/$defs/fileMonitor": "fileMonitorConfig",
  "/$defs/wandb": "wandbConfig",
  "/$defs/comet": "cometConfig",
  "/$defs/commsLogger": "commsLoggerConfig",
  "/$defs/sparseAttention": "sparseAttentionConfig",
  "/$defs/pipeline": "pipelineConfig",
  "/$defs/progressiveLayerDrop": "progressiveLayerDropConfig",
  "/$defs/curriculumScheduleConfig": "curriculumScheduleConfig",
  "/$defs/legacyCurriculumLearning": "legacyCurriculumLearningConfig",
  "/$defs/dataEfficiency": "dataEfficiencyConfig",
  "/$defs/dataEfficiency/properties/data_routing": "dataRoutingConfig",
  "/$defs/dataEfficiency/properties/data_sampling": "dataSamplingConfig",
  "/$defs/dataEfficiency/properties/data_sampling/properties/curriculum_learning": "dataSamplingCurriculumConfig",
  "/$defs/curriculumMetric": "curriculumMetricConfig",
  "/$defs/randomLtd": "randomLtdConfig",
  "/$defs/randomLtd/properties/random_ltd_schedule": "randomLtdSchedule",
  "/$defs/randomLtd/properties/random_ltd_schedule/properties/schedule_config": "randomLtdScheduleConfig",
  "/$defs/randomLtd/properties/layer_token_lr_schedule": "layerTokenLrSchedule",
  "/$defs/compressionTraining": "compressionTrainingConfig",
  "/$defs/compressionTraining/properties/weight_quantization": "compressionTechnique",
  "/$defs/compressionTraining/properties/activation_quantization": "compressionTechnique",
  "/$defs/compressionTraining/properties/sparse_pruning": "compressionTechnique",
  "/$defs/compressionTraining/properties/row_pruning": "compressionTechnique",
  "/$defs/compressionTraining/properties/head_pruning": "compressionTechnique",
  "/$defs/compressionTraining/properties/channel_pruning": "compressionTechnique",
  "/$defs/layerReduction": "layerReductionConfig",
  "/$defs/weightQuantizationShared": "weightQuantizationShared",
  "/$defs/weightQuantizationShared/properties/fp16_mixed_quantize": "fp16MixedQuantize",
  "/$defs/weightQuantizationGroups/additionalProperties": "compressionGroup",
  "/$defs/weightQuantizationGroups/additionalProperties/properties/params": "weightQuantizationGroupParams",
  "/$defs/activationQuantizationShared": "activationQuantizationShared",
  "/$defs/activationQuantizationGroups/additionalProperties": "compressionGroup",
  "/$defs/activationQuantizationGroups/additionalProperties/properties/params": "activationQuantizationGroupParams",
  "/$defs/pruningShared": "pruningShared",
  "/$defs/sparsePruningShared": "sparsePruningShared",
  "/$defs/headPruningShared": "headPruningShared",
  "/$defs/pruningGroups/additionalProperties": "compressionGroup",
  "/$defs/pruningGroups/additionalProperties/properties/params": "pruningGroupParams",
  "/$defs/eigenvalue": "eigenvalueConfig",
  "/$defs/elasticity": "elasticityConfig",
  "/$defs/checkpoint": "checkpointConfig",
  "/$defs/checkpoint/properties/parallel_write": "checkpointParallelWrite",
  "/$defs/dataTypes": "dataTypesConfig",
  "/$defs/hybridEngine": "hybridEngineConfig",
  "/$defs/nebula": "nebulaConfig",
  "/$defs/weightQuantization": "weightQuantizationConfig",
  "/$defs/timers": "timersConfig",
  "/$defs/timers/properties/throughput": "throughputTimerConfig",
  "/$defs/tensorParallel": "tensorParallelConfig",
  "/$defs/tpConfig": "tpConfig",
};

/** Every object schema closed by additionalProperties: false, by JSON pointer. */
function closedObjects(schema: unknown, pointer = ""): Map<string, JsonSchema> {
  const found = new Map<string, JsonSchema>();
  if (typeof schema !== "object" || schema === null) return found;
  const node = schema as JsonSchema & Record<string, unknown>;
  if (node.additionalProperties === false && node.properties !== undefined) found.set(pointer, node);
  for (const [key, child] of Object.entries(node)) {
    const childPointer = `${pointer}/${key.replace(/~/g, "~0").replace(/\//g, "~1")}`;
    if (Array.isArray(child)) child.forEach((item, index) => closedObjects(item, `${childPointer}/${index}`).forEach((v, k) => found.set(k, v)));
    else closedObjects(child, childPointer).forEach((v, k) => found.set(k, v));
  }
  return found;
}

describe("types and schema in step", () => {
  const closed = closedObjects(deepspeedConfigSchema);

  it("every closed object of the schema has a key list", () => {
    expect([...closed.keys()].filter((pointer) => !(pointer in LISTS))).toEqual([]);
  });

  it("every key list names a closed object of the schema", () => {
    expect(Object.keys(LISTS).filter((pointer) => !closed.has(pointer))).toEqual([]);
  });

  it("every key list is used", () => {
    const used = new Set(Object.values(LISTS));
    expect(Object.keys(CONFIG_KEYS).filter((name) => !used.has(name as KeyListName))).toEqual([]);
  });

  it.each(Object.entries(LISTS))("%s has exactly the keys of %s", (pointer, listName) => {
    const properties = Object.keys(closed.get(pointer)?.properties ?? {}).sort();
    expect([...CONFIG_KEYS[listName]].sort()).toEqual(properties);
  });

  it("zero_optimization's keys include every documented ZeRO key", () => {
    const documented = [
      "stage", "allgather_partitions", "allgather_bucket_size", "overlap_comm", "reduce_scatter", "reduce_bucket_size",
      "contiguous_gradients", "offload_param", "offload_optimizer", "stage3_max_live_parameters", "stage3_max_reuse_distance",
      "stage3_prefetch_bucket_size", "stage3_param_persistence_threshold", "stage3_gather_16bit_weights_on_model_save",
      "stage3_gather_fp16_weights_on_model_save", "sub_group_size", "elastic_checkpoint", "round_robin_gradients",
      "zero_hpz_partition_size", "zero_quantized_weights", "zero_quantized_gradients", "mics_shard_size", "cpu_offload",
      "ignore_unused_parameters", "load_from_fp32_weights", "log_trace_cache_warnings", "stage3_module_granularity_threshold",
    ];
    expect(documented.filter((key) => !CONFIG_KEYS.zeroOptimizationConfig.includes(key as never))).toEqual([]);
  });
});
