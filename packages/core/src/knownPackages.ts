/**
 * Names that belong to Fulgur's own plugin packages, so that asking for one that is not installed
 * says which package to install instead of "unknown name".
 */

export const KNOWN_STRATEGY_PACKAGES: Readonly<Record<string, string>> = {
  single_device: "@fulgur/strategy-kit",
  ddp: "@fulgur/strategy-ddp",
  ddp_spawn: "@fulgur/strategy-ddp",
  ddp_fork: "@fulgur/strategy-ddp",
  ddp_find_unused_parameters_true: "@fulgur/strategy-ddp",
  ddp_find_unused_parameters_false: "@fulgur/strategy-ddp",
  ddp_spawn_find_unused_parameters_true: "@fulgur/strategy-ddp",
  ddp_spawn_find_unused_parameters_false: "@fulgur/strategy-ddp",
  ddp_notverbose: "@fulgur/strategy-ddp",
  ddp_static_graph: "@fulgur/strategy-ddp",
  fsdp: "@fulgur/strategy-fsdp",
  fsdp_full_shard: "@fulgur/strategy-fsdp",
  fsdp_shard_grad_op: "@fulgur/strategy-fsdp",
  fsdp_cpu_offload: "@fulgur/strategy-fsdp",
  fsdp_hybrid_shard: "@fulgur/strategy-fsdp",
  deepspeed: "@fulgur/strategy-zero",
  deepspeed_stage_1: "@fulgur/strategy-zero",
  deepspeed_stage_1_offload: "@fulgur/strategy-zero",
  deepspeed_stage_2: "@fulgur/strategy-zero",
  deepspeed_stage_2_offload: "@fulgur/strategy-zero",
  deepspeed_stage_3: "@fulgur/strategy-zero",
  deepspeed_stage_3_offload: "@fulgur/strategy-zero",
  deepspeed_stage_3_offload_nvme: "@fulgur/strategy-zero",
  zero1: "@fulgur/strategy-zero",
  zero2: "@fulgur/strategy-zero",
  zero3: "@fulgur/strategy-zero",
  pipeline: "@fulgur/strategy-pipeline",
  pipeline_gpipe: "@fulgur/strategy-pipeline",
  pipeline_1f1b: "@fulgur/strategy-pipeline",
};

export const KNOWN_ACCELERATOR_PACKAGES: Readonly<Record<string, string>> = {
  cuda: "@fulgur/accelerator-cuda",
  gpu: "@fulgur/accelerator-cuda",
};
