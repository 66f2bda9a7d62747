/**
 * `fullyShard(module, options)`: shard by hand, as FSDP2's `fully_shard` is used in
 * `configureModel`, one block at a time and then the root. A marked module becomes a unit; when any
 * module is marked, the marks replace the wrap policy. The root module needs no mark: its remaining
 * parameters always form the root unit (marking it gives that unit its own options). The options
 * are checked at the call and replace the strategy's for that unit.
 */
import type { Module } from "@fulgur/nn";
import { type FullyShardOptions, type ResolvedFullyShardOptions, parseFullyShardOptions } from "./api";

const MARK = Symbol.for("@fulgur/strategy-fsdp/fullyShard");

type Marked = Record<symbol, ResolvedFullyShardOptions | undefined>;

export function fullyShard<M extends Module>(module: M, options: FullyShardOptions = {}): M {
  (module as unknown as Marked)[MARK] = parseFullyShardOptions(options, `fullyShard(${module.constructor.name})`);
  return module;
}

/** Paths of the modules `fullyShard` marked (the root itself excluded). */
export function markedModules(root: Module): string[] {
  return [...fullyShardOptions(root).keys()].filter((path) => path !== "");
}

/** The options `fullyShard` gave each marked module, by path ("" for the root, when it was marked). */
export function fullyShardOptions(root: Module): Map<string, ResolvedFullyShardOptions> {
  const out = new Map<string, ResolvedFullyShardOptions>();
  for (const [path, m] of root.namedModules()) {
    const options = (m as unknown as Marked)[MARK];
    if (options) out.set(path, options);
  }
  return out;
}
