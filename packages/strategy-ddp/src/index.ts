/**
 * @fulgur/strategy-ddp: distributed data parallel training on @fulgur/strategy-kit. Importing the
 * package registers `ddp`, `ddp_spawn`, `ddp_fork`, `ddp_find_unused_parameters_{true,false}`,
 * `ddp_spawn_find_unused_parameters_{true,false}`, `ddp_notverbose` and `ddp_static_graph`, so
 * `new Trainer({ strategy: "ddp", devices: 2 })` finds them (the Trainer imports this package on
 * demand when one of these names is asked for).
 */
import { StrategyRegistry } from "@fulgur/core";
import { registerStrategies } from "./registration";

export { DDP_DEFAULTS, DDPOptionError, parseDDPOptions, type DDPOptions, type ResolvedDDPOptions, type StartMethod } from "./api";
export { DDPStrategy } from "./strategy";
export { DDP_STRATEGIES, PACKAGE_NAME, registerStrategies, type DDPStrategyEntry } from "./registration";
export { GradBucket, assignBuckets, type BucketSlot, type ParamInfo } from "./bucket";
export { Reducer, UnusedParametersError, countParameterUses, type ReducerOptions } from "./reducer";

registerStrategies(StrategyRegistry);
