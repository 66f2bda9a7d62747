/**
 * The TypeScript shape of a DeepSpeed config, written by hand beside the JSON Schema
 * (schema/deepspeed-config.schema.json). test/keys.test.ts holds the two in step: every object
 * the schema closes with `additionalProperties: false` has a key list in keys.ts, and those
 * lists are checked against these interfaces at compile time.
 *
 * Property names are DeepSpeed's own (snake_case), so a config object typed here is the very
 * JSON DeepSpeed reads. Descriptions live in the schema, where editors show them.
 */

/** Filled in by Hugging Face Transformers or Accelerate before DeepSpeed reads the config. */
export type Auto = "auto";

/** fp32 / fp16 / bf16, in either case: DeepSpeed lower-cases it. */
export type CommunicationDtype = "fp32" | "fp16" | "bf16" | "FP32" | "FP16" | "BF16";

export type TorchDtypeName =
  | "fp32" | "float32" | "float" | "torch.float32"
  | "fp16" | "float16" | "half" | "torch.float16"
  | "bf16" | "bfloat16" | "torch.bfloat16";

export interface DeepSpeedConfig {
  $schema?: string;
  train_batch_size?: number | Auto;
  train_micro_batch_size_per_gpu?: number | Auto;
  gradient_accumulation_steps?: number | Auto;
  steps_per_print?: number | null;
  dump_state?: boolean;
  wall_clock_breakdown?: boolean;
  memory_breakdown?: boolean;
  optimizer?: OptimizerConfig;
  scheduler?: SchedulerConfig;
  communication_data_type?: CommunicationDtype | null;
  seq_parallel_comm_data_type?: CommunicationDtype;
  prescale_gradients?: boolean;
  gradient_predivide_factor?: number;
  sparse_gradients?: boolean;
  disable_allgather?: boolean;
  fp16?: Fp16Config;
  bf16?: Bf16Config;
  /** @deprecated the old name of bf16. */
  bfloat16?: Bf16Config;
  amp?: AmpConfig;
  gradient_clipping?: number | Auto;
  graph_harvesting?: boolean;
  /** The boolean form (true: stage 1) is deprecated. */
  zero_optimization?: ZeroOptimizationConfig | boolean;
  /** @deprecated only read with `zero_optimization: true`. */
  allgather_size?: number;
  zero_allow_untested_optimizer?: boolean;
  zero_force_ds_cpu_optimizer?: boolean;
  activation_checkpointing?: ActivationCheckpointingConfig;
  aio?: AioConfig | null;
  flops_profiler?: FlopsProfilerConfig;
  autotuning?: AutotuningConfig;
  tensorboard?: FileMonitorConfig;
  csv_monitor?: FileMonitorConfig;
  wandb?: WandbConfig;
  comet?: CometConfig;
  comms_logger?: CommsLoggerConfig;
  sparse_attention?: SparseAttentionConfig;
  pipeline?: PipelineConfig;
  progressive_layer_drop?: ProgressiveLayerDropConfig;
  curriculum_learning?: LegacyCurriculumLearningConfig;
  data_efficiency?: DataEfficiencyConfig;
  compression_training?: CompressionTrainingConfig;
  quantize_training?: QuantizeTrainingConfig;
  eigenvalue?: EigenvalueConfig;
  elasticity?: ElasticityConfig;
  checkpoint?: CheckpointConfig;
  data_types?: DataTypesConfig;
  dataloader_drop_last?: boolean;
  hybrid_engine?: HybridEngineConfig;
  nebula?: NebulaConfig;
  weight_quantization?: WeightQuantizationConfig;
  timers?: TimersConfig;
  tensor_parallel?: TensorParallelConfig;
  use_data_before_expert_parallelism?: boolean;
  vocabulary_size?: number | null;
}

// ---- optimizer -------------------------------------------------------------------------------

/** DeepSpeed's own optimizers; DeepSpeed matches these in any letter case. */
export type DeepSpeedOptimizerName =
  | "Adam" | "AdamW" | "Adagrad" | "Lamb" | "Lion" | "OneBitAdam" | "ZeroOneAdam" | "OneBitLamb"
  | "MuAdam" | "MuAdamW" | "MuSGD";

/** Other types are looked up, case-sensitively, in torch.optim. */
export type TorchOptimizerName =
  | "Adadelta" | "Adafactor" | "Adamax" | "ASGD" | "LBFGS" | "NAdam" | "RAdam" | "RMSprop" | "Rprop" | "SGD" | "SparseAdam";

export interface OptimizerConfig {
  // `string & {}` keeps the literal names as completions while still taking other letter cases.
  type: DeepSpeedOptimizerName | TorchOptimizerName | (string & {});
  params?: OptimizerParams;
  legacy_fusion?: boolean;
}

/** The params of the type named; for torch.optim types other than SGD and for mup's optimizers they are free-form. */
export type OptimizerParams =
  | AdamParams | LambParams | OneBitAdamParams | ZeroOneAdamParams | OneBitLambParams
  | LionParams | AdagradParams | SgdParams | { [argument: string]: unknown };

export type Betas = [number, number];

interface CommonOptimizerParams {
  lr?: number | Auto;
  weight_decay?: number | Auto;
}

export interface AdamParams extends CommonOptimizerParams {
  betas?: Betas | Auto;
  eps?: number | Auto;
  bias_correction?: boolean;
  amsgrad?: boolean;
  torch_adam?: boolean;
  adam_w_mode?: boolean;
  set_grad_none?: boolean;
  fp32_optimizer_states?: boolean;
  foreach?: boolean | null;
  fused?: boolean | null;
  capturable?: boolean;
  maximize?: boolean;
  differentiable?: boolean;
}

export interface LambParams extends CommonOptimizerParams {
  betas?: Betas | Auto;
  eps?: number | Auto;
  bias_correction?: boolean;
  eps_inside_sqrt?: boolean;
  max_coeff?: number;
  min_coeff?: number;
  amsgrad?: boolean;
}

export type CommBackendName = "nccl" | "mpi" | "hccl" | "compressed";

interface OneBitCommonParams extends CommonOptimizerParams {
  betas?: Betas | Auto;
  eps?: number | Auto;
  bias_correction?: boolean;
  eps_inside_sqrt?: boolean;
  amsgrad?: boolean;
  cuda_aware?: boolean;
  comm_backend_name?: CommBackendName;
}

export interface OneBitAdamParams extends OneBitCommonParams {
  freeze_step?: number;
}

export interface ZeroOneAdamParams extends OneBitCommonParams {
  var_freeze_step?: number;
  var_update_scaler?: number;
  local_step_scaler?: number;
  local_step_clipper?: number;
}

export interface OneBitLambParams extends OneBitCommonParams {
  max_coeff?: number;
  min_coeff?: number;
  freeze_step?: number;
  coeff_beta?: number;
  factor_max?: number;
  factor_min?: number;
  factor_threshold?: number;
}

export interface LionParams extends CommonOptimizerParams {
  betas?: Betas | Auto;
  set_grad_none?: boolean;
  fp32_optimizer_states?: boolean;
}

export interface AdagradParams extends CommonOptimizerParams {
  eps?: number | Auto;
  amsgrad?: boolean;
  fp32_optimizer_states?: boolean;
  lr_decay?: number;
  initial_accumulator_value?: number;
  foreach?: boolean | null;
  fused?: boolean | null;
  maximize?: boolean;
  differentiable?: boolean;
}

export interface SgdParams extends CommonOptimizerParams {
  momentum?: number;
  dampening?: number;
  nesterov?: boolean;
  maximize?: boolean;
  foreach?: boolean | null;
  fused?: boolean | null;
  differentiable?: boolean;
}

// ---- scheduler -------------------------------------------------------------------------------

export type DeepSpeedSchedulerName = "WarmupLR" | "WarmupDecayLR" | "WarmupCosineLR" | "OneCycle" | "LRRangeTest";

export type TorchSchedulerName =
  | "LambdaLR" | "MultiplicativeLR" | "StepLR" | "MultiStepLR" | "ConstantLR" | "LinearLR" | "ExponentialLR"
  | "SequentialLR" | "CosineAnnealingLR" | "ChainedScheduler" | "ReduceLROnPlateau" | "CyclicLR"
  | "CosineAnnealingWarmRestarts" | "OneCycleLR" | "PolynomialLR";

export interface SchedulerConfig {
  type: DeepSpeedSchedulerName | TorchSchedulerName;
  params: SchedulerParams;
}

export type SchedulerParams =
  | WarmupLRParams | WarmupDecayLRParams | WarmupCosineLRParams | OneCycleParams | LRRangeTestParams
  | { [argument: string]: unknown };

export type WarmupType = "log" | "linear";

export interface WarmupLRParams {
  warmup_min_lr?: number | Auto;
  warmup_max_lr?: number | Auto;
  warmup_num_steps?: number | Auto;
  warmup_type?: WarmupType;
  last_batch_iteration?: number;
}

export interface WarmupDecayLRParams extends WarmupLRParams {
  total_num_steps: number | Auto;
}

export interface WarmupCosineLRParams {
  total_num_steps: number | Auto;
  warmup_min_ratio?: number;
  warmup_num_steps?: number | Auto;
  cos_min_ratio?: number;
  warmup_type?: WarmupType;
  last_batch_iteration?: number;
}

export interface OneCycleParams {
  cycle_min_lr: number;
  cycle_max_lr: number;
  decay_lr_rate?: number;
  cycle_first_step_size?: number;
  cycle_second_step_size?: number | null;
  cycle_first_stair_count?: number;
  cycle_second_stair_count?: number | null;
  decay_step_size?: number;
  cycle_momentum?: boolean;
  cycle_min_mom?: number;
  cycle_max_mom?: number;
  decay_mom_rate?: number;
  last_batch_iteration?: number;
}

export interface LRRangeTestParams {
  lr_range_test_min_lr?: number;
  lr_range_test_step_size?: number;
  lr_range_test_step_rate?: number;
  lr_range_test_staircase?: boolean;
  last_batch_iteration?: number;
}

// ---- precision -------------------------------------------------------------------------------

export interface Fp16Config {
  enabled?: boolean | Auto;
  auto_cast?: boolean;
  loss_scale?: number;
  initial_scale_power?: number;
  loss_scale_window?: number;
  hysteresis?: number;
  consecutive_hysteresis?: boolean;
  min_loss_scale?: number;
  fp16_master_weights_and_grads?: boolean;
}

export interface Bf16Config {
  enabled?: boolean | Auto;
  immediate_grad_update?: boolean;
}

/** Every key but enabled goes to apex.amp.initialize(). */
export interface AmpConfig {
  enabled?: boolean | Auto;
  opt_level?: "O0" | "O1" | "O2" | "O3" | Auto;
  cast_model_type?: string | null;
  patch_torch_functions?: boolean | null;
  keep_batchnorm_fp32?: boolean | string | null;
  master_weights?: boolean | null;
  loss_scale?: number | string | null;
  cast_model_outputs?: string | null;
  num_losses?: number;
  verbosity?: number;
  min_loss_scale?: number | null;
  max_loss_scale?: number;
}

// ---- ZeRO ------------------------------------------------------------------------------------

export type ZeroStage = 0 | 1 | 2 | 3;
export type OffloadDevice = "cpu" | "nvme" | "none";

export interface ZeroOptimizationConfig {
  stage?: ZeroStage | Auto;
  contiguous_gradients?: boolean;
  reduce_scatter?: boolean;
  reduce_bucket_size?: number | Auto;
  use_multi_rank_bucket_allreduce?: boolean;
  allgather_partitions?: boolean;
  allgather_bucket_size?: number;
  overlap_comm?: boolean | null;
  load_from_fp32_weights?: boolean;
  elastic_checkpoint?: boolean;
  offload_param?: OffloadParamConfig;
  offload_optimizer?: OffloadOptimizerConfig;
  sub_group_size?: number;
  /** @deprecated use offload_optimizer. */
  cpu_offload?: boolean | null;
  /** @deprecated use offload_param. */
  cpu_offload_param?: boolean | null;
  /** @deprecated use the pin_memory of offload_param or offload_optimizer. */
  cpu_offload_use_pin_memory?: boolean | null;
  stage3_prefetch_bucket_size?: number | Auto;
  prefetch_bucket_size?: number;
  stage3_param_persistence_threshold?: number | Auto;
  param_persistence_threshold?: number;
  stage3_model_persistence_threshold?: number;
  model_persistence_threshold?: number;
  stage3_max_live_parameters?: number;
  max_live_parameters?: number;
  stage3_max_reuse_distance?: number;
  max_reuse_distance?: number;
  stage3_gather_16bit_weights_on_model_save?: boolean | Auto;
  gather_16bit_weights_on_model_save?: boolean;
  /** @deprecated use stage3_gather_16bit_weights_on_model_save. */
  stage3_gather_fp16_weights_on_model_save?: boolean;
  stage3_module_granularity_threshold?: number;
  module_granularity_threshold?: number;
  stage3_use_all_reduce_for_fetch_params?: boolean;
  use_all_reduce_for_fetch_params?: boolean;
  ignore_unused_parameters?: boolean;
  legacy_stage1?: boolean;
  round_robin_gradients?: boolean;
  zero_hpz_partition_size?: number;
  zero_quantized_weights?: boolean;
  zero_quantized_nontrainable_weights?: boolean;
  zero_quantized_gradients?: boolean;
  zeropp_loco_param?: ZeroppLocoParam | null;
  mics_shard_size?: number;
  mics_hierarchical_params_gather?: boolean;
  memory_efficient_linear?: boolean;
  pipeline_loading_checkpoint?: boolean;
  override_module_apply?: boolean;
  log_trace_cache_warnings?: boolean;
}

export interface OffloadParamConfig {
  device?: OffloadDevice | Auto;
  nvme_path?: string | null;
  buffer_count?: number;
  buffer_size?: number;
  max_in_cpu?: number;
  pin_memory?: boolean;
}

export interface OffloadOptimizerConfig {
  device?: OffloadDevice | Auto;
  nvme_path?: string | null;
  buffer_count?: number;
  pin_memory?: boolean;
  pipeline_read?: boolean;
  pipeline_write?: boolean;
  fast_init?: boolean;
  ratio?: number;
}

export interface ZeroppLocoParam {
  err_beta?: number;
  reset_T?: number;
}

// ---- activation checkpointing, I/O, profiling ------------------------------------------------

export interface ActivationCheckpointingConfig {
  partition_activations?: boolean;
  cpu_checkpointing?: boolean;
  contiguous_memory_optimization?: boolean;
  number_checkpoints?: number | null;
  synchronize_checkpoint_boundary?: boolean;
  profile?: boolean;
}

export interface AioConfig {
  block_size?: number;
  queue_depth?: number;
  intra_op_parallelism?: number;
  /** The documented name; current DeepSpeed reads intra_op_parallelism. */
  thread_count?: number;
  single_submit?: boolean;
  overlap_events?: boolean;
  use_gds?: boolean;
}

export interface FlopsProfilerConfig {
  enabled?: boolean;
  recompute_fwd_factor?: number;
  profile_step?: number;
  module_depth?: number;
  top_modules?: number;
  detailed?: boolean;
  output_file?: string | null;
}

export interface AutotuningConfig {
  enabled?: boolean;
  fast?: boolean;
  results_dir?: string;
  exps_dir?: string;
  overwrite?: boolean;
  metric?: "latency" | "throughput" | "flops" | "FLOPS";
  metric_path?: string | null;
  start_profile_step?: number;
  end_profile_step?: number;
  tuner_type?: "gridsearch" | "random" | "model_based";
  tuner_early_stopping?: number;
  tuner_num_trials?: number;
  arg_mappings?: { [configKey: string]: string } | null;
  model_info?: AutotuningModelInfo | null;
  model_info_path?: string | null;
  mp_size?: number;
  max_train_batch_size?: number | null;
  min_train_batch_size?: number;
  max_train_micro_batch_size_per_gpu?: number;
  min_train_micro_batch_size_per_gpu?: number;
  num_tuning_micro_batch_sizes?: number;
}

export interface AutotuningModelInfo {
  profile?: boolean;
  num_params?: number | null;
  hidden_size?: number | null;
  num_layers?: number | null;
}

// ---- monitoring ------------------------------------------------------------------------------

/** tensorboard and csv_monitor. */
export interface FileMonitorConfig {
  enabled?: boolean;
  output_path?: string | null;
  job_name?: string;
}

export interface WandbConfig {
  enabled?: boolean;
  group?: string | null;
  team?: string | null;
  project?: string;
}

export interface CometConfig {
  enabled?: boolean;
  samples_log_interval?: number;
  project?: string | null;
  workspace?: string | null;
  api_key?: string | null;
  experiment_name?: string | null;
  experiment_key?: string | null;
  online?: boolean | null;
  mode?: "get" | "create" | "get_or_create" | null;
}

export interface CommsLoggerConfig {
  enabled?: boolean;
  verbose?: boolean;
  prof_all?: boolean;
  debug?: boolean;
  prof_ops?: string[];
}

// ---- model-side features ---------------------------------------------------------------------

export interface SparseAttentionConfig {
  mode?: "dense" | "fixed" | "variable" | "bigbird" | "bslongformer";
  block?: number;
  different_layout_per_head?: boolean;
  num_local_blocks?: number;
  num_global_blocks?: number;
  attention?: "unidirectional" | "bidirectional";
  horizontal_global_attention?: boolean;
  num_different_global_patterns?: number;
  num_random_blocks?: number;
  local_window_blocks?: number[];
  global_block_indices?: number[];
  global_block_end_indices?: number[] | null;
  num_sliding_window_blocks?: number;
}

export interface PipelineConfig {
  stages?: number | Auto;
  partition?: string;
  seed_layers?: boolean;
  activation_checkpoint_interval?: number;
  pipe_partitioned?: boolean;
  grad_partitioned?: boolean;
  use_reentrant?: boolean;
}

export interface ProgressiveLayerDropConfig {
  enabled?: boolean;
  theta?: number;
  gamma?: number;
}

// ---- data efficiency and curriculum learning -------------------------------------------------

export type CurriculumScheduleType = "fixed_linear" | "fixed_root" | "fixed_discrete" | "custom";

export interface CurriculumScheduleConfig {
  total_curriculum_step?: number;
  difficulty_step?: number;
  root_degree?: number;
  difficulty?: number[];
  max_step?: number[];
}

export interface LegacyCurriculumLearningConfig {
  enabled?: boolean;
  curriculum_type?: "seqlen";
  min_difficulty?: number;
  max_difficulty?: number;
  schedule_type?: CurriculumScheduleType;
  schedule_config?: CurriculumScheduleConfig;
}

export interface DataEfficiencyConfig {
  enabled?: boolean;
  seed?: number;
  data_routing?: DataRoutingConfig;
  data_sampling?: DataSamplingConfig;
}

export interface DataRoutingConfig {
  enabled?: boolean;
  random_ltd?: RandomLtdConfig;
}

export interface DataSamplingConfig {
  enabled?: boolean;
  num_epochs?: number;
  num_workers?: number;
  curriculum_learning?: DataSamplingCurriculumConfig;
}

export interface DataSamplingCurriculumConfig {
  enabled?: boolean;
  data_cluster_path?: string;
  curriculum_metrics?: { [metricName: string]: CurriculumMetricConfig };
}

export interface CurriculumMetricConfig {
  index_to_sample_path?: string;
  index_to_metric_path?: string;
  difficulty_type?: "value" | "percentile";
  clustering_type?: "schedule_based" | "single_cluster";
  min_difficulty?: number;
  max_difficulty?: number;
  schedule_type?: CurriculumScheduleType;
  schedule_config?: CurriculumScheduleConfig;
}

export interface RandomLtdConfig {
  enabled?: boolean;
  total_layer_num?: number;
  random_ltd_layer_num?: number;
  random_ltd_layer_id?: number[];
  model_mask_name?: string;
  model_type?: "decoder" | "encoder";
  hidden_state_order?: "batch_seq_dim" | "seq_batch_dim";
  random_ltd_schedule?: RandomLtdSchedule;
  layer_token_lr_schedule?: LayerTokenLrSchedule;
}

export interface RandomLtdSchedule {
  min_value?: number;
  max_value?: number;
  schedule_type?: "fixed_linear";
  schedule_config?: RandomLtdScheduleConfig;
}

export interface RandomLtdScheduleConfig {
  require_steps?: number;
  seq_per_step?: number;
}

export interface LayerTokenLrSchedule {
  enabled?: boolean;
  total_layer_tokens?: number;
  warmup_type?: "linear" | "cosine";
  warmup_layer_tokens?: number;
}

// ---- compression -----------------------------------------------------------------------------

export type QuantizationType = "symmetric" | "asymmetric";

export interface CompressionTrainingConfig {
  layer_reduction?: LayerReductionConfig;
  weight_quantization?: CompressionTechnique<WeightQuantizationShared, WeightQuantizationGroupParams>;
  activation_quantization?: CompressionTechnique<ActivationQuantizationShared, ActivationQuantizationGroupParams>;
  sparse_pruning?: CompressionTechnique<SparsePruningShared, PruningGroupParams>;
  row_pruning?: CompressionTechnique<PruningShared, PruningGroupParams>;
  head_pruning?: CompressionTechnique<HeadPruningShared, PruningGroupParams>;
  channel_pruning?: CompressionTechnique<PruningShared, PruningGroupParams>;
}

export interface CompressionTechnique<Shared, GroupParams> {
  shared_parameters?: Shared;
  different_groups?: { [groupName: string]: CompressionGroup<GroupParams> };
}

export interface CompressionGroup<Params> {
  params?: Params;
  modules?: string[];
  related_modules?: string[][] | null;
}

export interface LayerReductionConfig {
  enabled?: boolean;
  keep_number_layer?: number;
  module_name_prefix?: string;
  teacher_layer?: number[];
  other_module_name?: string[];
}

export interface WeightQuantizationShared {
  enabled?: boolean;
  quantizer_kernel?: boolean;
  schedule_offset?: number;
  quantize_groups?: number;
  quantize_verbose?: boolean;
  quantization_type?: QuantizationType;
  rounding?: "nearest" | "stochastic";
  quantize_weight_in_forward?: boolean;
  fp16_mixed_quantize?: Fp16MixedQuantize;
}

export interface Fp16MixedQuantize {
  enabled?: boolean;
  quantize_change_ratio?: number;
}

export interface WeightQuantizationGroupParams {
  start_bits?: number;
  target_bits?: number;
  quantization_period?: number;
}

export interface ActivationQuantizationShared {
  enabled?: boolean;
  quantization_type?: QuantizationType;
  range_calibration?: "dynamic" | "static";
  schedule_offset?: number;
}

export interface ActivationQuantizationGroupParams {
  bits?: number;
}

export interface PruningShared {
  enabled?: boolean;
  schedule_offset?: number;
  method?: "l1" | "topk";
}

export interface SparsePruningShared {
  enabled?: boolean;
  schedule_offset?: number;
  schedule_offset_end?: number;
  schedule_offset_stride?: number;
  method?: "l1" | "topk" | "snip_momentum";
  block_pattern?: string;
  dense_ratio?: number;
  excluded_modules?: string[];
}

export interface HeadPruningShared {
  enabled?: boolean;
  schedule_offset?: number;
  method?: "topk";
  num_heads?: number;
}

export interface PruningGroupParams {
  dense_ratio?: number;
}

/** Legacy MoQ block: open, see the schema's $comment. */
export interface QuantizeTrainingConfig {
  enabled?: boolean;
  quantize_verbose?: boolean;
  quantizer_kernel?: boolean;
  quantize_type?: QuantizationType;
  quantize_groups?: number;
  eigenvalue?: EigenvalueConfig;
  [legacyKey: string]: unknown;
}

export interface EigenvalueConfig {
  enabled?: boolean;
  verbose?: boolean;
  max_iter?: number;
  tol?: number;
  stability?: number;
  gas_boundary_resolution?: number;
  layer_name?: string;
  layer_num?: number;
}

// ---- elasticity, checkpoints, runtime services -----------------------------------------------

export interface ElasticityConfig {
  enabled?: boolean;
  max_train_batch_size?: number;
  micro_batch_sizes?: number[];
  min_gpus?: number;
  max_gpus?: number;
  min_time?: number;
  prefer_larger_batch?: boolean;
  version?: 0.1 | 0.2;
  ignore_non_elastic_batch_info?: boolean;
  num_gpus_per_node?: number;
  model_parallel_size?: number;
}

export type TagValidation = "Ignore" | "Warn" | "Fail" | "IGNORE" | "WARN" | "FAIL" | "ignore" | "warn" | "fail";

export interface CheckpointConfig {
  tag_validation?: TagValidation;
  load_universal?: boolean;
  use_node_local_storage?: boolean;
  parallel_write?: CheckpointParallelWrite;
}

export interface CheckpointParallelWrite {
  pipeline_stage?: boolean;
}

export interface DataTypesConfig {
  grad_accum_dtype?: TorchDtypeName | null;
}

export interface HybridEngineConfig {
  enabled?: boolean;
  max_out_tokens?: number;
  inference_tp_size?: number;
  release_inference_cache?: boolean;
  pin_parameters?: boolean;
  tp_gather_partition_size?: number;
}

export interface NebulaConfig {
  enabled?: boolean;
  persistent_storage_path?: string | null;
  persistent_time_interval?: number;
  num_of_version_in_retention?: number;
  enable_nebula_load?: boolean;
  nebula_load_path?: string | null;
}

export interface WeightQuantizationConfig {
  enabled?: boolean;
  num_bits?: number;
  q_type?: QuantizationType;
  q_groups?: number;
  quantized_initialization?: { [option: string]: unknown };
  post_init_quant?: { [option: string]: unknown };
}

export interface TimersConfig {
  throughput?: ThroughputTimerConfig;
}

export interface ThroughputTimerConfig {
  enabled?: boolean;
  synchronized?: boolean;
}

export interface TensorParallelConfig {
  autotp_size?: number;
  tp?: TpConfig;
  tensor_parallel?: TpConfig;
  keep_module_on_host?: boolean;
  replace_with_kernel_inject?: boolean;
  kernel_inject?: boolean;
}

export interface TpConfig {
  tp_size?: number;
  tp_grain_size?: number;
}
