/** The pipeline family's names, from one table (the names @fulgur/core's table points here). */
import { type PluginOptions, StrategyRegistry } from "@fulgur/core";
import { type StrategyRegistryLike, registerTable } from "@fulgur/strategy-kit";
import type { PipelineOptions } from "./api";
import { PipelineStrategy } from "./strategy";

export const PACKAGE_NAME = "@fulgur/strategy-pipeline";

export interface PipelineStrategyEntry {
  readonly name: string;
  readonly description: string;
  readonly defaults: Readonly<PipelineOptions>;
}

export const PIPELINE_STRATEGIES: readonly PipelineStrategyEntry[] = Object.freeze([
  { name: "pipeline", description: "pipeline parallel: the model cut into stages between its blocks, 1F1B schedule", defaults: { schedule: "1f1b" } },
  { name: "pipeline_1f1b", description: "pipeline parallel with the 1F1B (PipeDream-flush) schedule", defaults: { schedule: "1f1b" } },
  { name: "pipeline_gpipe", description: "pipeline parallel with the GPipe schedule (all forwards, then all backwards)", defaults: { schedule: "gpipe" } },
]);

export function registerStrategies(registry: StrategyRegistryLike = StrategyRegistry): string[] {
  const table = PIPELINE_STRATEGIES.map((e) => ({
    ...e,
    defaults: e.defaults as PluginOptions,
    create: (options: PluginOptions) => new PipelineStrategy(options as PipelineOptions, e.name),
  }));
  return registerTable(registry, table, PACKAGE_NAME);
}
