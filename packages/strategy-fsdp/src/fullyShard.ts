/**
 * `fullyShard(module)`: shard by hand, as FSDP2's `fully_shard` is used in `configureModel`, one
 * block at a time and then the root. A marked module becomes a unit; when any module is marked,
 * the marks replace the wrap policy. The root module needs no mark: its remaining parameters
 * always form the root unit.
 */
import type { Module } from "@fulgur/nn";

const MARK = Symbol.for("@fulgur/strategy-fsdp/fullyShard");

export function fullyShard<M extends Module>(module: M): M {
  (module as unknown as Record<symbol, boolean>)[MARK] = true;
  return module;
}

/** Paths of the modules `fullyShard` marked (the root itself excluded). */
export function markedModules(root: Module): string[] {
  return root
    .namedModules()
    .filter(([path, m]) => path !== "" && (m as unknown as Record<symbol, boolean>)[MARK] === true)
    .map(([path]) => path);
}
