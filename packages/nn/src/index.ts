/**
 * @fulgur/nn: modules, layers, the reference GPT, initialisers, optimizers, schedulers and
 * gradient clipping, on top of @fulgur/tensor.
 */
export { Module } from "./module";
export { ModuleList, Sequential } from "./containers";
export type { BackwardPreHook, ForwardHook, ForwardPreHook, LoadStateDictResult, NamedOptions, RemovableHandle } from "./module";
export { parameter, isParameter } from "./parameter";
export { materializeModule } from "./materialize";
export type { MaterializeOptions } from "./materialize";

export type { LayerOptions } from "./layers/options";
export { Linear } from "./layers/linear";
export type { LinearOptions } from "./layers/linear";
export { Embedding } from "./layers/embedding";
export { LayerNorm } from "./layers/layerNorm";
export type { LayerNormOptions } from "./layers/layerNorm";
export { Dropout } from "./layers/dropout";
export { GELU, ReLU, Tanh } from "./layers/activation";
export { CausalSelfAttention, causalAttention } from "./layers/attention";
export type { CausalSelfAttentionOptions } from "./layers/attention";

export { GPT, Block, GPT_CONFIGS, gptParamCount, gptFlopsPerStep, resolveGPTConfig, humanCount } from "./gpt";
export type { GPTConfig, GPTConfigName, GPTOptions, BlockOptions } from "./gpt";
export { activationProfile, autocastCopyElements, gptActivationProfile } from "./activationMemory";
export type { ActivationProfile, ActivationProfileOptions, ActivationSegment } from "./activationMemory";

export * as init from "./init";
export {
  uniform_,
  normal_,
  constant_,
  zeros_,
  ones_,
  kaimingUniform_,
  kaimingNormal_,
  xavierUniform_,
  xavierNormal_,
  truncNormal_,
  fanInAndFanOut,
  calculateGain,
} from "./init";
export type { KaimingOptions, XavierOptions, TruncNormalOptions, Nonlinearity, FanMode } from "./init";

export { Optimizer, flattenOptimizerState, unflattenOptimizerState, stateDType } from "./optim/optimizer";
export type {
  OptimizerStateDict,
  OptimizerStateMeta,
  ParamGroup,
  ParamGroupInput,
  ParamsInput,
  ParamState,
  StateValue,
} from "./optim/optimizer";
export { SGD } from "./optim/sgd";
export type { SGDOptions } from "./optim/sgd";
export { Adam, AdamW } from "./optim/adam";
export type { AdamOptions } from "./optim/adam";
export { LRScheduler, CosineWithWarmup, LambdaLR, StepLR } from "./optim/schedulers";
export type { CosineWithWarmupOptions, SchedulerStateDict } from "./optim/schedulers";

export { clampGradients, clipGradNorm, clipGradValue, gradNormPart, scaleToNorm } from "./clip";
export type { ClipGradNormOptions } from "./clip";
