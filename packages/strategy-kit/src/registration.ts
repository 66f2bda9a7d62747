/**
 * The kit's own strategy names, from one table (STYLE.md: registration from tables). The Trainer
 * registers these before resolving any name, so `single_device` needs no extra import.
 */
import { type CheckpointIO, type PluginOptions, type Strategy, StrategyRegistry } from "@fulgur/core";
import { type SingleDeviceOptions, SingleDeviceStrategy } from "./singleDevice";

export const PACKAGE_NAME = "@fulgur/strategy-kit";

export interface StrategyEntry {
  readonly name: string;
  readonly description: string;
  readonly create: (options: PluginOptions) => Strategy;
}

export const KIT_STRATEGIES: readonly StrategyEntry[] = Object.freeze([
  {
    name: "single_device",
    description: "one process on one device, no communication",
    create: (o: PluginOptions) => new SingleDeviceStrategy(o as SingleDeviceOptions),
  },
]);

/** The part of a registry a strategy package needs (any copy of @fulgur/core's Registry fits). */
export interface StrategyRegistryLike {
  has(name: string): boolean;
  register(
    name: string,
    factory: (options: PluginOptions) => Strategy,
    options?: { description?: string; defaults?: PluginOptions; package?: string; checkpointIO?: CheckpointIO | (() => CheckpointIO) },
  ): void;
}

/**
 * Registers every entry of `table` not registered yet; returns the names this call added. Strategy
 * packages call it with their own table, so every package registers the same way.
 */
export function registerTable(
  registry: StrategyRegistryLike,
  table: readonly {
    readonly name: string;
    readonly description: string;
    readonly defaults?: PluginOptions;
    readonly create: (o: PluginOptions) => Strategy;
    /** The checkpoint IO this name uses unless the user picks one. */
    readonly checkpointIO?: CheckpointIO | (() => CheckpointIO);
  }[],
  packageName: string,
): string[] {
  const added: string[] = [];
  for (const entry of table) {
    if (registry.has(entry.name)) continue;
    const io = entry.checkpointIO === undefined ? {} : { checkpointIO: entry.checkpointIO };
    registry.register(entry.name, entry.create, { description: entry.description, defaults: { ...(entry.defaults ?? {}) }, package: packageName, ...io });
    added.push(entry.name);
  }
  return added;
}

export function registerStrategies(registry: StrategyRegistryLike = StrategyRegistry): string[] {
  return registerTable(registry, KIT_STRATEGIES, PACKAGE_NAME);
}
