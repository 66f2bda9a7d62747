/**
 * The DDP family's names, from one table (STYLE.md: registration from tables, not reflection).
 * Lightning registers the same family; each entry is DDPStrategy with different defaults, and
 * options the user passes (Trainer `strategyOptions`) override them.
 */
import { type PluginOptions, StrategyRegistry } from "@fulgur/core";
import { type StrategyRegistryLike, registerTable } from "@fulgur/strategy-kit";
import type { DDPOptions } from "./api";
import { DDPStrategy } from "./strategy";

export const PACKAGE_NAME = "@fulgur/strategy-ddp";

export interface DDPStrategyEntry {
  readonly name: string;
  readonly description: string;
  readonly defaults: Readonly<DDPOptions>;
}

export const DDP_STRATEGIES: readonly DDPStrategyEntry[] = Object.freeze([
  { name: "ddp", description: "data parallel, one process per device; re-runs the script once per rank when nothing launched it", defaults: {} },
  { name: "ddp_spawn", description: "data parallel; forks one worker per device from the script (child_process.fork)", defaults: { startMethod: "spawn" } },
  { name: "ddp_fork", description: "data parallel; forks workers like ddp_spawn (Node has no fork without exec)", defaults: { startMethod: "spawn" } },
  {
    name: "ddp_find_unused_parameters_true",
    description: "ddp that reduces the gradients of parameters a step does not use (as zeros)",
    defaults: { findUnusedParameters: true },
  },
  {
    name: "ddp_find_unused_parameters_false",
    description: "ddp where every parameter must get a gradient every step (the default)",
    defaults: { findUnusedParameters: false },
  },
  {
    name: "ddp_spawn_find_unused_parameters_true",
    description: "ddp_spawn that reduces the gradients of unused parameters",
    defaults: { startMethod: "spawn", findUnusedParameters: true },
  },
  {
    name: "ddp_spawn_find_unused_parameters_false",
    description: "ddp_spawn where every parameter must get a gradient every step",
    defaults: { startMethod: "spawn", findUnusedParameters: false },
  },
  { name: "ddp_notverbose", description: "ddp without the bucket layout and hints printed on rank 0", defaults: { verbose: false } },
  {
    name: "ddp_static_graph",
    description: "ddp for graphs that are the same every step: parameter usage is learnt once",
    defaults: { staticGraph: true },
  },
]);

/** Registers every DDP name not registered yet; returns the names this call added. */
export function registerStrategies(registry: StrategyRegistryLike = StrategyRegistry): string[] {
  const table = DDP_STRATEGIES.map((e) => ({
    ...e,
    defaults: e.defaults as PluginOptions,
    create: (options: PluginOptions) => new DDPStrategy(options as DDPOptions, e.name),
  }));
  return registerTable(registry, table, PACKAGE_NAME);
}
