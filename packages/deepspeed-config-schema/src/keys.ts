/**
 * One key list per closed object of the schema, each checked against its interface in types.ts
 * at compile time: keysOf<T>() takes a Record<keyof T, true>, so a key missing from the list or
 * a key the interface lacks is a type error. test/keys.test.ts then checks each list against the
 * schema's `properties`, which closes the loop between the JSON and the types.
 */
import type * as T from "./types.js";

function keysOf<Shape>(keys: Record<keyof Shape & string, true>): readonly (keyof Shape & string)[] {
  return Object.freeze(Object.keys(keys) as (keyof Shape & string)[]);
}

/** The keys of each config object, named after its interface (lower camel case). */
export const CONFIG_KEYS = Object.freeze({
  deepSpeedConfig: keysOf<T.DeepSpeedConfig>({
    "$schema": true, train_batch_size: true, train_micro_batch_size_per_gpu: true,
    gradient_accumulation_steps: true, steps_per_print: true, dump_state: true, wall_clock_breakdown: true,
    memory_breakdown: true, optimizer: true, scheduler: true, communication_data_type: true,
    seq_parallel_comm_data_type: true, prescale_gradients: true, gradient_predivide_factor: true,
    sparse_gradients: true, disable_allgather: true, fp16: true, bf16: true, bfloat16: true, amp: true,
    gradient_clipping: true, graph_harvesting: true, zero_optimization: true, allgather_size: true,
    zero_allow_untested_optimizer: true, zero_force_ds_cpu_optimizer: true, activation_checkpointing: true,
    aio: true, flops_profiler: true, autotuning: true, tensorboard: true, csv_monitor: true, wandb: true,
    comet: true, comms_logger: true, sparse_attention: true, pipeline: true, progressive_layer_drop: true,
    curriculum_learning: true, data_efficiency: true, compression_training: true, quantize_training: true,
    eigenvalue: true, elasticity: true, checkpoint: true, data_types: true, dataloader_drop_last: true,
    hybrid_engine: true, nebula: true, weight_quantization: true, timers: true, tensor_parallel: true,
    use_data_before_expert_parallelism: true, vocabulary_size: true,
  }),
  optimizerConfig: keysOf<T.OptimizerConfig>({ type: true, params: true, legacy_fusion: true }),
  adamParams: keysOf<T.AdamParams>({
    lr: true, weight_decay: true, betas: true, eps: true, bias_correction: true, amsgrad: true,
    torch_adam: true, adam_w_mode: true, set_grad_none: true, fp32_optimizer_states: true, foreach: true,
    fused: true, capturable: true, maximize: true, differentiable: true,
  }),
  lambParams: keysOf<T.LambParams>({
    lr: true, weight_decay: true, betas: true, eps: true, bias_correction: true, eps_inside_sqrt: true,
    max_coeff: true, min_coeff: true, amsgrad: true,
  }),
  oneBitAdamParams: keysOf<T.OneBitAdamParams>({
    lr: true, weight_decay: true, betas: true, eps: true, bias_correction: true, eps_inside_sqrt: true,
    amsgrad: true, cuda_aware: true, comm_backend_name: true, freeze_step: true,
  }),
  zeroOneAdamParams: keysOf<T.ZeroOneAdamParams>({
    lr: true, weight_decay: true, betas: true, eps: true, bias_correction: true, eps_inside_sqrt: true,
    amsgrad: true, cuda_aware: true, comm_backend_name: true, var_freeze_step: true,
    var_update_scaler: true, local_step_scaler: true, local_step_clipper: true,
  }),
  oneBitLambParams: keysOf<T.OneBitLambParams>({
    lr: true, weight_decay: true, betas: true, eps: true, bias_correction: true, eps_inside_sqrt: true,
    amsgrad: true, cuda_aware: true, comm_backend_name: true, max_coeff: true, min_coeff: true,
    freeze_step: true, coeff_beta: true, factor_max: true, factor_min: true, factor_threshold: true,
  }),
  lionParams: keysOf<T.LionParams>({
    lr: true, weight_decay: true, betas: true, set_grad_none: true, fp32_optimizer_states: true,
  }),
  adagradParams: keysOf<T.AdagradParams>({
    lr: true, weight_decay: true, eps: true, amsgrad: true, fp32_optimizer_states: true, lr_decay: true,
    initial_accumulator_value: true, foreach: true, fused: true, maximize: true, differentiable: true,
  }),
  sgdParams: keysOf<T.SgdParams>({
    lr: true, weight_decay: true, momentum: true, dampening: true, nesterov: true, maximize: true,
    foreach: true, fused: true, differentiable: true,
  }),
  schedulerConfig: keysOf<T.SchedulerConfig>({ type: true, params: true }),
  warmupLRParams: keysOf<T.WarmupLRParams>({
    warmup_min_lr: true, warmup_max_lr: true, warmup_num_steps: true, warmup_type: true,
    last_batch_iteration: true,
  }),
  warmupDecayLRParams: keysOf<T.WarmupDecayLRParams>({
    warmup_min_lr: true, warmup_max_lr: true, warmup_num_steps: true, warmup_type: true,
    last_batch_iteration: true, total_num_steps: true,
  }),
  warmupCosineLRParams: keysOf<T.WarmupCosineLRParams>({
    total_num_steps: true, warmup_min_ratio: true, warmup_num_steps: true, cos_min_ratio: true,
    warmup_type: true, last_batch_iteration: true,
  }),
  oneCycleParams: keysOf<T.OneCycleParams>({
    cycle_min_lr: true, cycle_max_lr: true, decay_lr_rate: true, cycle_first_step_size: true,
    cycle_second_step_size: true, cycle_first_stair_count: true, cycle_second_stair_count: true,
    decay_step_size: true, cycle_momentum: true, cycle_min_mom: true, cycle_max_mom: true,
    decay_mom_rate: true, last_batch_iteration: true,
  }),
  lRRangeTestParams: keysOf<T.LRRangeTestParams>({
    lr_range_test_min_lr: true, lr_range_test_step_size: true, lr_range_test_step_rate: true,
    lr_range_test_staircase: true, last_batch_iteration: true,
  }),
  fp16Config: keysOf<T.Fp16Config>({
    enabled: true, auto_cast: true, loss_scale: true, initial_scale_power: true, loss_scale_window: true,
    hysteresis: true, consecutive_hysteresis: true, min_loss_scale: true,
    fp16_master_weights_and_grads: true,
  }),
  bf16Config: keysOf<T.Bf16Config>({ enabled: true, immediate_grad_update: true }),
  ampConfig: keysOf<T.AmpConfig>({
    enabled: true, opt_level: true, cast_model_type: true, patch_torch_functions: true,
    keep_batchnorm_fp32: true, master_weights: true, loss_scale: true, cast_model_outputs: true,
    num_losses: true, verbosity: true, min_loss_scale: true, max_loss_scale: true,
  }),
  zeroOptimizationConfig: keysOf<T.ZeroOptimizationConfig>({
    stage: true, contiguous_gradients: true, reduce_scatter: true, reduce_bucket_size: true,
    use_multi_rank_bucket_allreduce: true, allgather_partitions: true, allgather_bucket_size: true,
    overlap_comm: true, load_from_fp32_weights: true, elastic_checkpoint: true, offload_param: true,
    offload_optimizer: true, sub_group_size: true, cpu_offload: true, cpu_offload_param: true,
    cpu_offload_use_pin_memory: true, stage3_prefetch_bucket_size: true, prefetch_bucket_size: true,
    stage3_param_persistence_threshold: true, param_persistence_threshold: true,
    stage3_model_persistence_threshold: true, model_persistence_threshold: true,
    stage3_max_live_parameters: true, max_live_parameters: true, stage3_max_reuse_distance: true,
    max_reuse_distance: true, stage3_gather_16bit_weights_on_model_save: true,
    gather_16bit_weights_on_model_save: true, stage3_gather_fp16_weights_on_model_save: true,
    stage3_module_granularity_threshold: true, module_granularity_threshold: true,
    stage3_use_all_reduce_for_fetch_params: true, use_all_reduce_for_fetch_params: true,
    ignore_unused_parameters: true, legacy_stage1: true, round_robin_gradients: true,
    zero_hpz_partition_size: true, zero_quantized_weights: true, zero_quantized_nontrainable_weights: true,
    zero_quantized_gradients: true, zeropp_loco_param: true, mics_shard_size: true,
    mics_hierarchical_params_gather: true, memory_efficient_linear: true, pipeline_loading_checkpoint: true,
    override_module_apply: true, log_trace_cache_warnings: true,
  }),
  offloadParamConfig: keysOf<T.OffloadParamConfig>({
    device: true, nvme_path: true, buffer_count: true, buffer_size: true, max_in_cpu: true,
    pin_memory: true,
  }),
  offloadOptimizerConfig: keysOf<T.OffloadOptimizerConfig>({
    device: true, nvme_path: true, buffer_count: true, pin_memory: true, pipeline_read: true,
    pipeline_write: true, fast_init: true, ratio: true,
  }),
  zeroppLocoParam: keysOf<T.ZeroppLocoParam>({ err_beta: true, reset_T: true }),
  activationCheckpointingConfig: keysOf<T.ActivationCheckpointingConfig>({
    partition_activations: true, cpu_checkpointing: true, contiguous_memory_optimization: true,
    number_checkpoints: true, synchronize_checkpoint_boundary: true, profile: true,
  }),
  aioConfig: keysOf<T.AioConfig>({
    block_size: true, queue_depth: true, intra_op_parallelism: true, thread_count: true,
    single_submit: true, overlap_events: true, use_gds: true,
  }),
  flopsProfilerConfig: keysOf<T.FlopsProfilerConfig>({
    enabled: true, recompute_fwd_factor: true, profile_step: true, module_depth: true, top_modules: true,
    detailed: true, output_file: true,
  }),
  autotuningConfig: keysOf<T.AutotuningConfig>({
    enabled: true, fast: true, results_dir: true, exps_dir: true, overwrite: true, metric: true,
    metric_path: true, start_profile_step: true, end_profile_step: true, tuner_type: true,
    tuner_early_stopping: true, tuner_num_trials: true, arg_mappings: true, model_info: true,
    model_info_path: true, mp_size: true, max_train_batch_size: true, min_train_batch_size: true,
    max_train_micro_batch_size_per_gpu: true, min_train_micro_batch_size_per_gpu: true,
    num_tuning_micro_batch_sizes: true,
  }),
  autotuningModelInfo: keysOf<T.AutotuningModelInfo>({
    profile: true, num_params: true, hidden_size: true, num_layers: true,
  }),
  fileMonitorConfig: keysOf<T.FileMonitorConfig>({ enabled: true, output_path: true, job_name: true }),
  wandbConfig: keysOf<T.WandbConfig>({ enabled: true, group: true, team: true, project: true }),
  cometConfig: keysOf<T.CometConfig>({
    enabled: true, samples_log_interval: true, project: true, workspace: true, api_key: true,
    experiment_name: true, experiment_key: true, online: true, mode: true,
  }),
  commsLoggerConfig: keysOf<T.CommsLoggerConfig>({
    enabled: true, verbose: true, prof_all: true, debug: true, prof_ops: true,
  }),
  sparseAttentionConfig: keysOf<T.SparseAttentionConfig>({
    mode: true, block: true, different_layout_per_head: true, num_local_blocks: true,
    num_global_blocks: true, attention: true, horizontal_global_attention: true,
    num_different_global_patterns: true, num_random_blocks: true, local_window_blocks: true,
    global_block_indices: true, global_block_end_indices: true, num_sliding_window_blocks: true,
  }),
  pipelineConfig: keysOf<T.PipelineConfig>({
    stages: true, partition: true, seed_layers: true, activation_checkpoint_interval: true,
    pipe_partitioned: true, grad_partitioned: true, use_reentrant: true,
  }),
  progressiveLayerDropConfig: keysOf<T.ProgressiveLayerDropConfig>({
    enabled: true, theta: true, gamma: true,
  }),
  curriculumScheduleConfig: keysOf<T.CurriculumScheduleConfig>({
    total_curriculum_step: true, difficulty_step: true, root_degree: true, difficulty: true, max_step: true,
  }),
  legacyCurriculumLearningConfig: keysOf<T.LegacyCurriculumLearningConfig>({
    enabled: true, curriculum_type: true, min_difficulty: true, max_difficulty: true, schedule_type: true,
    schedule_config: true,
  }),
  dataEfficiencyConfig: keysOf<T.DataEfficiencyConfig>({
    enabled: true, seed: true, data_routing: true, data_sampling: true,
  }),
  dataRoutingConfig: keysOf<T.DataRoutingConfig>({ enabled: true, random_ltd: true }),
  dataSamplingConfig: keysOf<T.DataSamplingConfig>({
    enabled: true, num_epochs: true, num_workers: true, curriculum_learning: true,
  }),
  dataSamplingCurriculumConfig: keysOf<T.DataSamplingCurriculumConfig>({
    enabled: true, data_cluster_path: true, curriculum_metrics: true,
  }),
  curriculumMetricConfig: keysOf<T.CurriculumMetricConfig>({
    index_to_sample_path: true, index_to_metric_path: true, difficulty_type: true, clustering_type: true,
    min_difficulty: true, max_difficulty: true, schedule_type: true, schedule_config: true,
  }),
  randomLtdConfig: keysOf<T.RandomLtdConfig>({
    enabled: true, total_layer_num: true, random_ltd_layer_num: true, random_ltd_layer_id: true,
    model_mask_name: true, model_type: true, hidden_state_order: true, random_ltd_schedule: true,
    layer_token_lr_schedule: true,
  }),
  randomLtdSchedule: keysOf<T.RandomLtdSchedule>({
    min_value: true, max_value: true, schedule_type: true, schedule_config: true,
  }),
  randomLtdScheduleConfig: keysOf<T.RandomLtdScheduleConfig>({ require_steps: true, seq_per_step: true }),
  layerTokenLrSchedule: keysOf<T.LayerTokenLrSchedule>({
    enabled: true, total_layer_tokens: true, warmup_type: true, warmup_layer_tokens: true,
  }),
  compressionTrainingConfig: keysOf<T.CompressionTrainingConfig>({
    layer_reduction: true, weight_quantization: true, activation_quantization: true, sparse_pruning: true,
    row_pruning: true, head_pruning: true, channel_pruning: true,
  }),
  compressionTechnique: keysOf<T.CompressionTechnique<unknown, unknown>>({
    shared_parameters: true, different_groups: true,
  }),
  compressionGroup: keysOf<T.CompressionGroup<unknown>>({ params: true, modules: true, related_modules: true }),
  layerReductionConfig: keysOf<T.LayerReductionConfig>({
    enabled: true, keep_number_layer: true, module_name_prefix: true, teacher_layer: true,
    other_module_name: true,
  }),
  weightQuantizationShared: keysOf<T.WeightQuantizationShared>({
    enabled: true, quantizer_kernel: true, schedule_offset: true, quantize_groups: true,
    quantize_verbose: true, quantization_type: true, rounding: true, quantize_weight_in_forward: true,
    fp16_mixed_quantize: true,
  }),
  fp16MixedQuantize: keysOf<T.Fp16MixedQuantize>({ enabled: true, quantize_change_ratio: true }),
  weightQuantizationGroupParams: keysOf<T.WeightQuantizationGroupParams>({
    start_bits: true, target_bits: true, quantization_period: true,
  }),
  activationQuantizationShared: keysOf<T.ActivationQuantizationShared>({
    enabled: true, quantization_type: true, range_calibration: true, schedule_offset: true,
  }),
  activationQuantizationGroupParams: keysOf<T.ActivationQuantizationGroupParams>({ bits: true }),
  pruningShared: keysOf<T.PruningShared>({ enabled: true, schedule_offset: true, method: true }),
  sparsePruningShared: keysOf<T.SparsePruningShared>({
    enabled: true, schedule_offset: true, schedule_offset_end: true, schedule_offset_stride: true,
    method: true, block_pattern: true, dense_ratio: true, excluded_modules: true,
  }),
  headPruningShared: keysOf<T.HeadPruningShared>({
    enabled: true, schedule_offset: true, method: true, num_heads: true,
  }),
  pruningGroupParams: keysOf<T.PruningGroupParams>({ dense_ratio: true }),
  eigenvalueConfig: keysOf<T.EigenvalueConfig>({
    enabled: true, verbose: true, max_iter: true, tol: true, stability: true, gas_boundary_resolution: true,
    layer_name: true, layer_num: true,
  }),
  elasticityConfig: keysOf<T.ElasticityConfig>({
    enabled: true, max_train_batch_size: true, micro_batch_sizes: true, min_gpus: true, max_gpus: true,
    min_time: true, prefer_larger_batch: true, version: true, ignore_non_elastic_batch_info: true,
    num_gpus_per_node: true, model_parallel_size: true,
  }),
  checkpointConfig: keysOf<T.CheckpointConfig>({
    tag_validation: true, load_universal: true, use_node_local_storage: true, parallel_write: true,
  }),
  checkpointParallelWrite: keysOf<T.CheckpointParallelWrite>({ pipeline_stage: true }),
  dataTypesConfig: keysOf<T.DataTypesConfig>({ grad_accum_dtype: true }),
  hybridEngineConfig: keysOf<T.HybridEngineConfig>({
    enabled: true, max_out_tokens: true, inference_tp_size: true, release_inference_cache: true,
    pin_parameters: true, tp_gather_partition_size: true,
  }),
  nebulaConfig: keysOf<T.NebulaConfig>({
    enabled: true, persistent_storage_path: true, persistent_time_interval: true,
    num_of_version_in_retention: true, enable_nebula_load: true, nebula_load_path: true,
  }),
  weightQuantizationConfig: keysOf<T.WeightQuantizationConfig>({
    enabled: true, num_bits: true, q_type: true, q_groups: true, quantized_initialization: true,
    post_init_quant: true,
  }),
  timersConfig: keysOf<T.TimersConfig>({ throughput: true }),
  throughputTimerConfig: keysOf<T.ThroughputTimerConfig>({ enabled: true, synchronized: true }),
  tensorParallelConfig: keysOf<T.TensorParallelConfig>({
    autotp_size: true, tp: true, tensor_parallel: true, keep_module_on_host: true,
    replace_with_kernel_inject: true, kernel_inject: true,
  }),
  tpConfig: keysOf<T.TpConfig>({ tp_size: true, tp_grain_size: true }),
});
