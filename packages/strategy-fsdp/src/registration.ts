/**
 * The FSDP family's names, from one table (Lightning registers `fsdp` and `fsdp_cpu_offload`;
 * the sharding strategies by name are Fulgur's additions, listed in @fulgur/core's table).
 */
import { type PluginOptions, StrategyRegistry } from "@fulgur/core";
import { type StrategyRegistryLike, registerTable } from "@fulgur/strategy-kit";
import type { FSDPOptions } from "./api";
import { FSDPStrategy } from "./strategy";

export const PACKAGE_NAME = "@fulgur/strategy-fsdp";

export interface FSDPStrategyEntry {
  readonly name: string;
  readonly description: string;
  readonly defaults: Readonly<FSDPOptions>;
}

export const FSDP_STRATEGIES: readonly FSDPStrategyEntry[] = Object.freeze([
  { name: "fsdp", description: "fully sharded data parallel: parameters, gradients and optimizer state sharded over the ranks", defaults: {} },
  { name: "fsdp_full_shard", description: "fsdp with FULL_SHARD (the default): units freed after forward, gathered again for backward", defaults: { shardingStrategy: "FULL_SHARD" } },
  { name: "fsdp_shard_grad_op", description: "fsdp keeping gathered units from forward until backward (less communication, more memory)", defaults: { shardingStrategy: "SHARD_GRAD_OP" } },
  { name: "fsdp_hybrid_shard", description: "fsdp sharded within a node and replicated across nodes", defaults: { shardingStrategy: "HYBRID_SHARD" } },
  { name: "fsdp_cpu_offload", description: "fsdp with parameter slices and optimizer state in host memory", defaults: { cpuOffload: true } },
]);

export function registerStrategies(registry: StrategyRegistryLike = StrategyRegistry): string[] {
  const table = FSDP_STRATEGIES.map((e) => ({
    ...e,
    defaults: e.defaults as PluginOptions,
    create: (options: PluginOptions) => new FSDPStrategy(options as FSDPOptions, e.name),
  }));
  return registerTable(registry, table, PACKAGE_NAME);
}
