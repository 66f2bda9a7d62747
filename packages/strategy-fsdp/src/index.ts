/**
 * @fulgur/strategy-fsdp: fully sharded data parallel training on @fulgur/strategy-kit and the
 * sharding engine of @fulgur/sharding. Importing the package registers `fsdp`, `fsdp_full_shard`,
 * `fsdp_shard_grad_op`, `fsdp_hybrid_shard` and `fsdp_cpu_offload`.
 */
import { StrategyRegistry } from "@fulgur/core";
import { registerStrategies } from "./registration";

export {
  FSDP_DEFAULTS,
  FSDPOptionError,
  parseFSDPOptions,
  parseFullyShardOptions,
  type FSDPMixedPrecision,
  type FSDPOptions,
  type FullyShardOptions,
  type ModuleClass,
  type ResolvedFSDPOptions,
  type ResolvedFullyShardOptions,
  type WrapPolicy,
} from "./api";
export { FSDPStrategy } from "./strategy";
export { FSDP_STRATEGIES, PACKAGE_NAME, registerStrategies, type FSDPStrategyEntry } from "./registration";
export { applyActivationCheckpointing } from "./activationCheckpointing";
export { fullyShard, fullyShardOptions, markedModules } from "./fullyShard";
export { moduleListElements, selectModules } from "./wrapPolicy";

registerStrategies(StrategyRegistry);
