/**
 * A TrainingModule's network built on the `meta` device for the memory plan, then undone: the plan
 * runs before the strategy is chosen and before any process is launched, but `configureModel`
 * builds into the module itself (and often returns early once a field is set). So the module's own
 * fields are recorded first (the Module's ordered maps and sets by their contents) and put back
 * after the plan, leaving the module as it was given: unconfigured, for the strategy to build.
 */
import type { Module } from "@fulgur/nn";
import { noGrad, withDevice } from "@fulgur/tensor";

type Snapshot = Map<PropertyKey, { value: unknown; entries?: unknown[] }>;

function snapshot(o: object): Snapshot {
  const s: Snapshot = new Map();
  for (const key of Reflect.ownKeys(o)) {
    const value = (o as Record<PropertyKey, unknown>)[key];
    const entries = value instanceof Map ? [...value.entries()] : value instanceof Set ? [...value.values()] : undefined;
    s.set(key, { value, entries });
  }
  return s;
}

function restore(o: object, s: Snapshot): void {
  const target = o as Record<PropertyKey, unknown>;
  for (const key of Reflect.ownKeys(o)) if (!s.has(key)) delete target[key];
  for (const [key, { value, entries }] of s) {
    if (value instanceof Map) {
      value.clear();
      for (const [k, v] of entries as [unknown, unknown][]) value.set(k, v);
    } else if (value instanceof Set) {
      value.clear();
      for (const v of entries!) value.add(v);
    }
    if (target[key] !== value) target[key] = value;
  }
}

/**
 * Runs `use` on `module` with its network built on `meta` by `configure`, then returns the module
 * to the state it was in. A module already configured (its parameters exist) is used as it is.
 */
export async function withMetaModel<M extends Module, T>(module: M, configure: () => void, use: (module: M) => Promise<T>): Promise<T> {
  if (module.parameters().length > 0) return use(module);
  const saved = snapshot(module);
  try {
    withDevice("meta", () => noGrad(configure));
    return await use(module);
  } finally {
    restore(module, saved);
  }
}
