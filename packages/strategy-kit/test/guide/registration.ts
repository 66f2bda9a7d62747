/**
 * Registering by name, from a table: `new Trainer({ strategy: "averaging" })` once the package is
 * imported. `registerTable` skips names already registered, so importing the package twice is fine.
 */
import { type PluginOptions, StrategyRegistry } from "@fulgur/core";
import { type ParallelOptions, type StrategyRegistryLike, registerTable } from "@fulgur/strategy-kit";
import { AveragingStrategy } from "./averagingStrategy";

export const PACKAGE_NAME = "my-averaging-strategy";

export const STRATEGIES = [
  {
    name: "averaging",
    description: "data parallel; gradients averaged over the ranks before each step",
    create: (o: PluginOptions) => new AveragingStrategy(o as ParallelOptions),
  },
  {
    name: "averaging_spawn",
    description: "averaging, with workers forked from the script",
    defaults: { startMethod: "spawn" },
    create: (o: PluginOptions) => new AveragingStrategy(o as ParallelOptions),
  },
];

export function registerStrategies(registry: StrategyRegistryLike = StrategyRegistry): string[] {
  return registerTable(registry, STRATEGIES, PACKAGE_NAME);
}
