/**
 * Optimizer state as checkpoint data, keyed by parameter name (DESIGN.md decision 15): tensors
 * are `state.<fqn>.<name>` and the metadata lists each group's parameters by name, so a state
 * saved by one strategy at one world size loads into another. A sharded strategy gathers each
 * parameter's state whole before saving and gives `load` a `slice` that cuts its own segment out.
 *
 * Version 1 (index-keyed, `state.<index>.<name>`) is still read, into the same parameters.
 */
import type { CheckpointMeta, OptimizerState } from "@fulgur/core";
import { type Optimizer, type OptimizerStateDict, unflattenOptimizerState } from "@fulgur/nn";
import type { Tensor } from "@fulgur/tensor";

export const OPTIMIZER_FORMAT = "fulgur-optimizer";
export const OPTIMIZER_FORMAT_VERSION = 2;

interface NamedMeta {
  format: typeof OPTIMIZER_FORMAT;
  version: 2;
  /** Scalars per parameter name (the step count). */
  state: Record<string, Record<string, number>>;
  /** Hyper-parameters per group, with the group's parameter names. */
  param_groups: Array<Record<string, unknown> & { params: string[] }>;
}

/** Names the optimizer's parameters; throws naming the group and position of a parameter it cannot name. */
function namesOf(optimizer: Optimizer, nameOf: (p: Tensor) => string | undefined): string[][] {
  return optimizer.paramGroups.map((g, gi) =>
    g.params.map((p, j) => {
      const name = nameOf(p);
      if (name === undefined) {
        throw new Error(`optimizer state: parameter ${j} of group ${gi} is not a parameter of the module; build the optimizer from module.parameters()`);
      }
      return name;
    }),
  );
}

/** One state tensor of one parameter, as the optimizer holds it. */
export interface StateEntry {
  readonly param: Tensor;
  readonly name: string;
  readonly stateName: string;
  readonly tensor: Tensor;
}

/**
 * The optimizer's state by parameter name. `whole(entries)` may replace the state tensors by the
 * whole parameters' (a sharded strategy gathers its segments, all of them at once so it can batch
 * the collectives); by default the tensors are taken as they are.
 */
export function namedOptimizerState(
  optimizer: Optimizer,
  nameOf: (p: Tensor) => string | undefined,
  whole: (entries: readonly StateEntry[]) => Tensor[] = (entries) => entries.map((e) => e.tensor),
): OptimizerState {
  const names = namesOf(optimizer, nameOf).flat();
  const params = optimizer.paramGroups.flatMap((g) => g.params);
  const sd = optimizer.stateDict();
  const entries: StateEntry[] = [];
  const state: NamedMeta["state"] = {};
  for (const [index, s] of Object.entries(sd.state)) {
    const name = names[Number(index)];
    const scalars: Record<string, number> = {};
    for (const [k, v] of Object.entries(s)) {
      if (typeof v === "number") scalars[k] = v;
      else entries.push({ param: params[Number(index)], name, stateName: k, tensor: v });
    }
    state[name] = scalars;
  }
  const tensors: Record<string, Tensor> = {};
  whole(entries).forEach((t, i) => (tensors[`state.${entries[i].name}.${entries[i].stateName}`] = t));
  let next = 0;
  const param_groups = sd.param_groups.map((g) => ({ ...g, params: g.params.map(() => names[next++]) }));
  const meta: NamedMeta = { format: OPTIMIZER_FORMAT, version: 2, state, param_groups };
  return { tensors, meta: meta as unknown as CheckpointMeta };
}

/**
 * Loads state saved by `namedOptimizerState` (any strategy, any world size) into `optimizer`.
 * `slice(param, t)` cuts this rank's part out of a whole parameter's state tensor (sharded
 * strategies); by default tensors are taken whole.
 */
export function loadNamedOptimizerState(
  optimizer: Optimizer,
  nameOf: (p: Tensor) => string | undefined,
  saved: OptimizerState,
  slice: (param: Tensor, t: Tensor) => Tensor = (_p, t) => t,
): void {
  const meta = saved.meta as unknown as NamedMeta | { format?: string; version?: number };
  if (meta?.format === OPTIMIZER_FORMAT && meta.version === 1) {
    optimizer.loadStateDict(unflattenOptimizerState(saved.tensors, meta as never));
    return;
  }
  if (meta?.format !== OPTIMIZER_FORMAT || meta.version !== OPTIMIZER_FORMAT_VERSION) {
    throw new RangeError(
      `optimizer state: format ${JSON.stringify(meta?.format)} version ${JSON.stringify(meta?.version)} is not known; ` +
        `this version reads "${OPTIMIZER_FORMAT}" versions 1 and ${OPTIMIZER_FORMAT_VERSION}`,
    );
  }
  const named = meta as NamedMeta;
  const mine = namesOf(optimizer, nameOf);
  if (named.param_groups.length !== mine.length) {
    throw new RangeError(`optimizer state: the checkpoint has ${named.param_groups.length} parameter groups; this optimizer has ${mine.length}`);
  }
  const byName = new Map<string, Record<string, Tensor>>();
  for (const [key, t] of Object.entries(saved.tensors)) {
    const m = /^state\.(.+)\.([^.]+)$/.exec(key);
    if (!m) throw new RangeError(`optimizer state: tensor name ${JSON.stringify(key)} is not "state.<parameter>.<name>"`);
    const entry = byName.get(m[1]) ?? {};
    entry[m[2]] = t;
    byName.set(m[1], entry);
  }
  const sd: OptimizerStateDict = { state: {}, param_groups: [] };
  let index = 0;
  const made: Tensor[] = [];
  try {
    named.param_groups.forEach((g, gi) => {
      const theirs = new Set(g.params);
      const missing = mine[gi].filter((n) => !theirs.has(n));
      if (missing.length > 0) {
        throw new RangeError(`optimizer state: group ${gi} of the checkpoint lacks ${missing.slice(0, 3).join(", ")}${missing.length > 3 ? ", ..." : ""}`);
      }
      const params: number[] = [];
      mine[gi].forEach((name, j) => {
        const param = optimizer.paramGroups[gi].params[j];
        const i = index++;
        params.push(i);
        const scalars = named.state[name];
        if (!scalars) return;
        const entry: Record<string, number | Tensor> = { ...scalars };
        for (const [k, t] of Object.entries(byName.get(name) ?? {})) {
          const part = slice(param, t);
          if (part !== t) made.push(part);
          entry[k] = part;
        }
        sd.state[String(i)] = entry;
      });
      sd.param_groups.push({ ...g, params });
    });
    optimizer.loadStateDict(sd);
  } finally {
    for (const t of made) t.dispose();
  }
}
