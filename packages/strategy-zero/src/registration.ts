/**
 * The DeepSpeed family's names, from one table (STYLE.md: registration from tables): Lightning's
 * `deepspeed*` names with the options Lightning registers them with, and Fulgur's short `zero1`,
 * `zero2`, `zero3`. `deepspeed` sets no stage, so a config's stage wins (2 without a config).
 */
import { type PluginOptions, StrategyRegistry } from "@fulgur/core";
import { type StrategyRegistryLike, registerTable } from "@fulgur/strategy-kit";
import type { DeepSpeedOptions } from "./api";
import { DeepSpeedStrategy } from "./strategy";

export const PACKAGE_NAME = "@fulgur/strategy-zero";

export interface ZeroStrategyEntry {
  readonly name: string;
  readonly description: string;
  readonly defaults: Readonly<DeepSpeedOptions>;
}

const NVME: DeepSpeedOptions = {
  stage: 3,
  offloadOptimizer: true,
  offloadParameters: true,
  remoteDevice: "nvme",
  offloadParamsDevice: "nvme",
  offloadOptimizerDevice: "nvme",
};

export const ZERO_STRATEGIES: readonly ZeroStrategyEntry[] = Object.freeze([
  { name: "deepspeed", description: "DeepSpeed ZeRO: the stage from the config, else stage 2", defaults: {} },
  { name: "deepspeed_stage_1", description: "ZeRO stage 1: optimizer state sharded", defaults: { stage: 1 } },
  { name: "deepspeed_stage_1_offload", description: "ZeRO stage 1 with optimizer state in host memory", defaults: { stage: 1, offloadOptimizer: true } },
  { name: "deepspeed_stage_2", description: "ZeRO stage 2: gradients and optimizer state sharded", defaults: { stage: 2 } },
  { name: "deepspeed_stage_2_offload", description: "ZeRO stage 2 with optimizer state in host memory", defaults: { stage: 2, offloadOptimizer: true } },
  { name: "deepspeed_stage_3", description: "ZeRO stage 3: parameters, gradients and optimizer state sharded", defaults: { stage: 3 } },
  {
    name: "deepspeed_stage_3_offload",
    description: "ZeRO stage 3 with parameter slices and optimizer state in host memory",
    defaults: { stage: 3, offloadOptimizer: true, offloadParameters: true },
  },
  { name: "deepspeed_stage_3_offload_nvme", description: "ZeRO stage 3 with parameter slices and optimizer state offloaded to NVMe (nvmePath, default /local_nvme)", defaults: NVME },
  { name: "zero1", description: "ZeRO stage 1 (deepspeed_stage_1)", defaults: { stage: 1 } },
  { name: "zero2", description: "ZeRO stage 2 (deepspeed_stage_2)", defaults: { stage: 2 } },
  { name: "zero3", description: "ZeRO stage 3 (deepspeed_stage_3)", defaults: { stage: 3 } },
]);

export function registerStrategies(registry: StrategyRegistryLike = StrategyRegistry): string[] {
  const table = ZERO_STRATEGIES.map((e) => ({
    ...e,
    defaults: e.defaults as PluginOptions,
    // Config problems wait for launch or setup: the registry builds every entry when the package loads.
    create: (options: PluginOptions) => new DeepSpeedStrategy(options as DeepSpeedOptions, e.name, { refuseConfigAt: "start" }),
  }));
  return registerTable(registry, table, PACKAGE_NAME);
}
