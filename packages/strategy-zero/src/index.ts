/**
 * @fulgur/strategy-zero: DeepSpeed's ZeRO stages 0 to 3 from a validated DeepSpeed config, with
 * CPU and NVMe offload, on @fulgur/strategy-kit and the sharding engine of @fulgur/sharding. Importing the
 * package registers `deepspeed`, `deepspeed_stage_1`, `deepspeed_stage_1_offload`,
 * `deepspeed_stage_2`, `deepspeed_stage_2_offload`, `deepspeed_stage_3`,
 * `deepspeed_stage_3_offload`, `deepspeed_stage_3_offload_nvme`, `zero1`, `zero2` and `zero3`.
 */
import { StrategyRegistry } from "@fulgur/core";
import { registerStrategies } from "./registration";

export {
  DEEPSPEED_DEFAULTS,
  DeepSpeedOptionError,
  parseDeepSpeedOptions,
  type DeepSpeedOptions,
  type ModuleClass,
  type OffloadTarget,
  type ResolvedDeepSpeedOptions,
  type WrapPolicy,
  type ZeroStage,
} from "./api";
export { CONFIG_ENV, ZeroConfigError, resolvePlan, type NvmeTuning, type OffloadDevice, type ZeroPlan } from "./config";
export { HONOURED_KEYS, keysWithoutEffect, type IdleKey, type KeyRule, type RunFacts } from "./keys";
export { DEEPSPEED_FP16_DEFAULTS, DeepSpeedLossScaler, type LossScalerSettings } from "./lossScaler";
export {
  FREE_MEMORY_HEADROOM,
  HOST_MEMORY_HEADROOM,
  describePlacement,
  keepForRatio,
  keepInHost,
  keepWithinBudget,
  keepWithinDevice,
  type HostKeepCosts,
  type KeepCosts,
  type UnitSize,
} from "./placement";
export { NvmePathError, checkNvmePath, engineOptionsFor, nvmeOffloadOf, persistentUnits, prefetchDepth, unitsKeptToBackward } from "./stages";
export { DeepSpeedStrategy, type DeepSpeedConstruction } from "./strategy";
export { PACKAGE_NAME, ZERO_STRATEGIES, registerStrategies, type ZeroStrategyEntry } from "./registration";
export { unitPaths } from "./wrapPolicy";

registerStrategies(StrategyRegistry);
