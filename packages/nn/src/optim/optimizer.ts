/**
 * `Optimizer`: the base every optimizer shares, shaped like PyTorch's. Parameters are held in
 * `paramGroups` (each `{ params, lr, ...hyperparameters }`), per-parameter state in `state`, and
 * `stateDict()` produces PyTorch's layout — `{ state: { [index]: {...} }, param_groups: [{ lr, ...,
 * params: [indices] }] }` with snake_case hyperparameter names — so checkpoints can be compared with,
 * and converted from, PyTorch's. State tensors are float32 (float64 for float64 parameters) on the
 * parameter's device, whatever the parameter dtype, because they are the precise copy of the update.
 *
 * [Note: optimizer memory] `step()` runs under `noGrad` inside a scope: every temporary of the
 * update is freed when it returns, and state tensors are `untrack()`-ed so a caller's scope (the
 * Trainer runs each step in one) never frees them.
 */
import { noGrad, scope, zeros } from "@fulgur/tensor";
import type { DType, Tensor } from "@fulgur/tensor";
import { checkNonNegative } from "../validate";

export type StateValue = Tensor | number;
export type ParamState = Record<string, StateValue>;

/** A parameter group: the tensors it updates and the hyperparameters they share. */
export interface ParamGroup {
  params: Tensor[];
  lr: number;
  [hyper: string]: unknown;
}

/** What a caller passes per group: hyperparameters left out take the optimizer's defaults. */
export interface ParamGroupInput {
  params: Iterable<Tensor>;
  [hyper: string]: unknown;
}

export type ParamsInput = Iterable<Tensor> | ParamGroupInput[];

/** PyTorch's optimizer state_dict layout. Tensors stay live references (do not dispose them). */
export interface OptimizerStateDict {
  state: Record<string, Record<string, StateValue>>;
  param_groups: Array<Record<string, unknown> & { params: number[] }>;
}

const snake = (k: string): string => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
const camel = (k: string): string => k.replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());

function isTensorLike(x: unknown): x is Tensor {
  return typeof x === "object" && x !== null && Array.isArray((x as Tensor).shape) && typeof (x as Tensor).dtype === "string";
}

/** dtype of optimizer state for a parameter: never narrower than float32. */
export function stateDType(p: Tensor): DType {
  return p.dtype === "float64" ? "float64" : "float32";
}

export abstract class Optimizer {
  readonly paramGroups: ParamGroup[] = [];
  /** Per-parameter state, keyed by the parameter tensor itself. */
  readonly state = new Map<Tensor, ParamState>();
  protected readonly defaults: Readonly<Record<string, unknown>>;
  private readonly name: string;

  constructor(params: ParamsInput, defaults: Record<string, unknown>) {
    this.name = this.constructor.name;
    this.defaults = Object.freeze({ ...defaults });
    const list = [...(params as Iterable<Tensor | ParamGroupInput>)];
    if (list.length === 0) throw new RangeError(`${this.name}: got an empty parameter list`);
    const groups: ParamGroupInput[] = isTensorLike(list[0]) ? [{ params: list as Tensor[] }] : (list as ParamGroupInput[]);
    for (const g of groups) this.addParamGroup(g);
  }

  /** Adds a group; its missing hyperparameters come from the defaults. A tensor may be in one group only. */
  addParamGroup(group: ParamGroupInput): void {
    if (typeof group !== "object" || group === null || group.params === undefined) {
      throw new TypeError(`${this.name}.addParamGroup: a group must be an object with "params"`);
    }
    const params = [...group.params];
    params.forEach((p, i) => {
      if (!isTensorLike(p)) throw new TypeError(`${this.name}: params[${i}] of group ${this.paramGroups.length} is not a tensor`);
      if (!p.isLeaf) throw new TypeError(`${this.name}: params[${i}] of group ${this.paramGroups.length} is not a leaf tensor`);
    });
    if (new Set(params).size !== params.length) throw new RangeError(`${this.name}: a parameter appears twice in one group`);
    for (const other of this.paramGroups) {
      if (other.params.some((p) => params.includes(p))) {
        throw new RangeError(`${this.name}.addParamGroup: some parameters are already in another group`);
      }
    }
    const full = { ...this.defaults, ...group, params } as ParamGroup;
    checkNonNegative(this.name, `lr (group ${this.paramGroups.length})`, full.lr);
    this.validateGroup(full, this.paramGroups.length);
    this.paramGroups.push(full);
  }

  /** Checks a group's hyperparameters; subclasses throw naming the field, the value and what is allowed. */
  protected abstract validateGroup(group: ParamGroup, index: number): void;

  /** Updates the parameters of one group from their `.grad` (parameters without a gradient are skipped). */
  protected abstract stepGroup(group: ParamGroup): void;

  /**
   * One update of every parameter with a gradient. A closure, when given, re-evaluates the model
   * and returns the loss (needed by line-search optimizers; the built-in ones just return it).
   */
  step<T = undefined>(closure?: () => T): T | undefined {
    const loss = closure ? closure() : undefined;
    noGrad(() =>
      scope(() => {
        for (const g of this.paramGroups) this.stepGroup(g);
      }),
    );
    return loss;
  }

  /** Drops gradients (disposing them) or zeroes them in place. */
  zeroGrad(setToNone = true): void {
    for (const g of this.paramGroups) {
      for (const p of g.params) {
        const grad = p.grad;
        if (!grad) continue;
        if (setToNone) {
          p.grad = null;
          grad.dispose();
        } else noGrad(() => grad.zero_());
      }
    }
  }

  /** The state of `p`, created by `init` on first use (the tensors `init` returns leave every scope). */
  protected stateOf(p: Tensor, init: () => ParamState): ParamState {
    let s = this.state.get(p);
    if (!s) {
      s = init();
      for (const v of Object.values(s)) if (typeof v !== "number") v.untrack();
      this.state.set(p, s);
    }
    return s;
  }

  /** A zero tensor shaped like `p`, in the state dtype, on `p`'s device. */
  protected zerosLike(p: Tensor): Tensor {
    return zeros(p.shape, { dtype: stateDType(p), device: p.device });
  }

  stateDict(): OptimizerStateDict {
    let next = 0;
    const index = new Map<Tensor, number>();
    const param_groups = this.paramGroups.map((g) => {
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(g)) if (k !== "params") out[snake(k)] = Array.isArray(v) ? [...v] : v;
      const params = g.params.map((p) => {
        index.set(p, next);
        return next++;
      });
      return { ...out, params };
    });
    const state: OptimizerStateDict["state"] = {};
    for (const [p, s] of this.state) {
      const i = index.get(p);
      if (i !== undefined) state[String(i)] = { ...s };
    }
    return { state, param_groups };
  }

  /**
   * Restores hyperparameters and state. Groups must have the same sizes as this optimizer's; state
   * tensors are copied (to the parameter's device, in the state dtype), so the caller keeps
   * ownership of what it passed in. Everything is checked before anything is changed.
   */
  loadStateDict(sd: OptimizerStateDict): void {
    const where = `${this.name}.loadStateDict`;
    if (!sd || typeof sd !== "object" || !Array.isArray(sd.param_groups) || typeof sd.state !== "object") {
      throw new TypeError(`${where}: expected { state, param_groups }`);
    }
    if (sd.param_groups.length !== this.paramGroups.length) {
      throw new RangeError(`${where}: the state has ${sd.param_groups.length} parameter groups; this optimizer has ${this.paramGroups.length}`);
    }
    const byIndex = new Map<number, Tensor>();
    sd.param_groups.forEach((g, gi) => {
      const mine = this.paramGroups[gi].params;
      if (!Array.isArray(g.params) || g.params.length !== mine.length) {
        throw new RangeError(`${where}: group ${gi} has ${g.params?.length} parameters in the state and ${mine.length} here`);
      }
      g.params.forEach((idx, j) => byIndex.set(idx, mine[j]));
    });
    const problems: string[] = [];
    for (const [key, s] of Object.entries(sd.state)) {
      const p = byIndex.get(Number(key));
      if (!p) {
        problems.push(`state ${key}: no parameter has this index`);
        continue;
      }
      for (const [name, v] of Object.entries(s)) {
        if (typeof v === "number") continue;
        if (!isTensorLike(v)) problems.push(`state ${key}.${name}: expected a number or a tensor`);
        else if (v.shape.length !== p.shape.length || v.shape.some((d, i) => d !== p.shape[i])) {
          problems.push(`state ${key}.${name}: expected shape [${p.shape.join(", ")}], got [${v.shape.join(", ")}]`);
        }
      }
    }
    if (problems.length) throw new RangeError(`${where}: the state does not match the parameters:\n  ${problems.join("\n  ")}`);

    sd.param_groups.forEach((g, gi) => {
      const mine = this.paramGroups[gi];
      for (const [k, v] of Object.entries(g)) if (k !== "params") mine[camel(k)] = Array.isArray(v) ? [...v] : v;
    });
    this.disposeState();
    noGrad(() => {
      for (const [key, s] of Object.entries(sd.state)) {
        const p = byIndex.get(Number(key))!;
        const copy: ParamState = {};
        for (const [name, v] of Object.entries(s)) {
          if (typeof v === "number") copy[name] = v;
          else {
            const t = zeros(p.shape, { dtype: stateDType(p), device: p.device });
            const src = v.device === p.device ? v : v.to(p.device);
            t.copy_(src);
            if (src !== v) src.dispose();
            copy[name] = t.untrack();
          }
        }
        this.state.set(p, copy);
      }
    });
  }

  /** Frees every state tensor (the optimizer can still step; state starts afresh). */
  disposeState(): void {
    for (const s of this.state.values()) for (const v of Object.values(s)) if (typeof v !== "number") v.dispose();
    this.state.clear();
  }
}

/**
 * Splits a state dict into tensors (for a safetensors file) and JSON metadata (everything else).
 * Tensor names are "state.<index>.<name>".
 */
export function flattenOptimizerState(sd: OptimizerStateDict): { tensors: Record<string, Tensor>; meta: OptimizerStateMeta } {
  const tensors: Record<string, Tensor> = {};
  const state: OptimizerStateMeta["state"] = {};
  for (const [i, s] of Object.entries(sd.state)) {
    const scalars: Record<string, number> = {};
    for (const [k, v] of Object.entries(s)) {
      if (typeof v === "number") scalars[k] = v;
      else tensors[`state.${i}.${k}`] = v;
    }
    state[i] = scalars;
  }
  return { tensors, meta: { format: "fulgur-optimizer", version: 1, state, param_groups: structuredClone(sd.param_groups) } };
}

export interface OptimizerStateMeta {
  format: "fulgur-optimizer";
  version: 1;
  state: Record<string, Record<string, number>>;
  param_groups: OptimizerStateDict["param_groups"];
}

/** The inverse of `flattenOptimizerState`. */
export function unflattenOptimizerState(tensors: Record<string, Tensor>, meta: OptimizerStateMeta): OptimizerStateDict {
  if (meta?.format !== "fulgur-optimizer" || meta.version !== 1) {
    throw new RangeError(
      `unflattenOptimizerState: unknown metadata format ${JSON.stringify(meta?.format)} version ${JSON.stringify(meta?.version)}; expected "fulgur-optimizer" version 1`,
    );
  }
  const state: OptimizerStateDict["state"] = {};
  for (const [i, s] of Object.entries(meta.state)) state[i] = { ...s };
  for (const [name, t] of Object.entries(tensors)) {
    const m = /^state\.(\d+)\.(.+)$/.exec(name);
    if (!m) throw new RangeError(`unflattenOptimizerState: tensor name ${JSON.stringify(name)} is not "state.<index>.<name>"`);
    (state[m[1]] ??= {})[m[2]] = t;
  }
  return { state, param_groups: structuredClone(meta.param_groups) };
}
