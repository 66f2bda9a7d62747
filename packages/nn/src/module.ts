/**
 * `Module`: the unit models are built from, as in PyTorch. Parameters, buffers and child modules are
 * registered explicitly (`registerParameter`, `registerBuffer`, `registerModule`) into ordered maps,
 * so dotted names ("blocks.0.qkv.weight") and their order are exactly the registration order, with
 * no Proxy or reflection. Layers read their tensors back through getters over those maps, which is
 * what lets `to()`, `loadStateDict()` and the strategies (decision 5: parameters become views of a
 * flat buffer) replace a tensor with `setParameter` without the layer holding a stale reference.
 *
 * Hooks are first-class (decision 6): forward pre-hooks and forward hooks run in `call()`, and
 * backward pre-hooks fire when the gradient of a call's output arrives, before that module's
 * backward runs — what FSDP needs to gather a unit's parameters again for backward.
 */
import { DTYPES, formatShape, isGradEnabled, isTensor, noGrad, normalizeDevice, scope } from "@fulgur/tensor";
import type { DType, Tensor } from "@fulgur/tensor";
import { isParameter, parameter } from "./parameter";

/** Runs before `forward`; may return replacement arguments. */
export type ForwardPreHook = (module: Module, args: unknown[]) => unknown[] | void;
/** Runs after `forward`; a return value other than `undefined` replaces the output. */
export type ForwardHook = (module: Module, args: unknown[], output: unknown) => unknown;
/** Runs when the first gradient of a call's output arrives, before the module's own backward. */
export type BackwardPreHook = (module: Module, gradOutput: Tensor) => void;

export interface RemovableHandle {
  readonly id: number;
  /** Unregisters the hook; idempotent. */
  remove(): void;
}

export interface LoadStateDictResult {
  readonly missingKeys: string[];
  readonly unexpectedKeys: string[];
}

export interface NamedOptions {
  /** Prepended (with a dot) to every name. */
  readonly prefix?: string;
  /** Include children's tensors (default true). */
  readonly recurse?: boolean;
}

let nextHookId = 0;

function join(prefix: string, name: string): string {
  return prefix === "" ? name : `${prefix}.${name}`;
}

export abstract class Module {
  /** Training mode: dropout is active, checkpointing recomputes. Set with `train()` / `eval()`. */
  training = true;

  // Ordered maps: Map iteration order is insertion order, which is the naming contract.
  private readonly _parameters = new Map<string, Tensor>();
  private readonly _buffers = new Map<string, Tensor>();
  private readonly _nonPersistent = new Set<string>();
  private readonly _modules = new Map<string, Module>();
  private readonly _forwardPreHooks = new Map<number, ForwardPreHook>();
  private readonly _forwardHooks = new Map<number, ForwardHook>();
  private readonly _backwardPreHooks = new Map<number, BackwardPreHook>();

  abstract forward(...args: any[]): any;

  /**
   * Runs forward pre-hooks, `forward`, forward hooks, and arms backward pre-hooks on the output.
   * It all runs inside a memory scope: every tensor the call made and did not return is freed when
   * it returns (autograd keeps what backward needs through its own references), so activations live
   * exactly as long as in PyTorch instead of until the end of the step. A module that stores a
   * tensor it made in a field must `keep()` or `untrack()` it.
   */
  call(...args: Parameters<this["forward"]>): ReturnType<this["forward"]> {
    return scope(() => this.callUnscoped(args));
  }

  private callUnscoped(args: unknown[]): ReturnType<this["forward"]> {
    let input: unknown[] = args;
    for (const hook of [...this._forwardPreHooks.values()]) {
      const replaced = hook(this, input);
      if (replaced !== undefined) input = replaced;
    }
    let output: unknown = this.forward(...input);
    for (const hook of [...this._forwardHooks.values()]) {
      const replaced = hook(this, input, output);
      if (replaced !== undefined) output = replaced;
    }
    if (this._backwardPreHooks.size > 0 && isGradEnabled()) this.armBackwardPreHooks(output);
    return output as ReturnType<this["forward"]>;
  }

  private armBackwardPreHooks(output: unknown): void {
    const outs = (Array.isArray(output) ? output : [output]).filter((t): t is Tensor => isTensor(t) && t.requiresGrad);
    // One call of the module is one backward: fire on whichever output's gradient arrives first.
    let fired = false;
    for (const t of outs) {
      t.registerHook((grad: Tensor) => {
        if (fired) return undefined;
        fired = true;
        for (const hook of [...this._backwardPreHooks.values()]) hook(this, grad);
        return undefined;
      });
    }
  }

  // ---- registration -------------------------------------------------------------------------

  private checkNewName(kind: string, name: string): void {
    if (typeof name !== "string" || name === "" || name.includes(".")) {
      throw new RangeError(
        `${this.constructor.name}.register${kind}: name must be a non-empty string without "."; got ${JSON.stringify(name)}`,
      );
    }
    if (this._parameters.has(name) || this._buffers.has(name) || this._modules.has(name)) {
      throw new Error(
        `${this.constructor.name}.register${kind}: ${JSON.stringify(name)} is already registered; use set${kind} to replace it`,
      );
    }
  }

  /** Registers `t` as a parameter (made a kept, grad-requiring leaf by `parameter()` if it is not one). */
  registerParameter(name: string, t: Tensor): Tensor {
    this.checkNewName("Parameter", name);
    const p = isParameter(t) ? t : parameter(t);
    this._parameters.set(name, p);
    return p;
  }

  /** Registers a buffer: state that is not trained (running statistics, masks). Non-persistent buffers stay out of `stateDict`. */
  registerBuffer(name: string, t: Tensor, options: { persistent?: boolean } = {}): Tensor {
    this.checkNewName("Buffer", name);
    t.untrack();
    this._buffers.set(name, t);
    if (options.persistent === false) this._nonPersistent.add(name);
    return t;
  }

  registerModule<M extends Module>(name: string, m: M): M {
    this.checkNewName("Module", name);
    if (!(typeof m === "object" && m !== null && typeof (m as Module).namedParameters === "function")) {
      throw new TypeError(`${this.constructor.name}.registerModule: ${JSON.stringify(name)} is not a Module`);
    }
    this._modules.set(name, m);
    return m;
  }

  /**
   * Replaces a registered parameter (a dotted name reaches into children). The old tensor is not
   * disposed: the caller decides, since a strategy may still own it.
   */
  setParameter(name: string, t: Tensor): Tensor {
    const [owner, leaf] = this.resolve(name, "setParameter");
    if (!owner._parameters.has(leaf)) throw new Error(`${this.constructor.name}.setParameter: no parameter ${JSON.stringify(name)}`);
    const p = isParameter(t) ? t : parameter(t);
    owner._parameters.set(leaf, p);
    return p;
  }

  setBuffer(name: string, t: Tensor): Tensor {
    const [owner, leaf] = this.resolve(name, "setBuffer");
    if (!owner._buffers.has(leaf)) throw new Error(`${this.constructor.name}.setBuffer: no buffer ${JSON.stringify(name)}`);
    t.untrack();
    owner._buffers.set(leaf, t);
    return t;
  }

  /** Replaces a child module, e.g. with a wrapper that gathers shards around it. */
  setModule<M extends Module>(name: string, m: M): M {
    const [owner, leaf] = this.resolve(name, "setModule");
    if (!owner._modules.has(leaf)) throw new Error(`${this.constructor.name}.setModule: no module ${JSON.stringify(name)}`);
    owner._modules.set(leaf, m);
    return m;
  }

  private resolve(name: string, op: string): [Module, string] {
    const parts = name.split(".");
    const leaf = parts.pop()!;
    const owner = parts.length === 0 ? this : this.getSubmodule(parts.join("."), op);
    return [owner, leaf];
  }

  /** A descendant by dotted path ("blocks.0"); "" is this module. */
  getSubmodule(path: string, op = "getSubmodule"): Module {
    if (path === "") return this;
    return path.split(".").reduce<Module>((m, part) => {
      const next = m._modules.get(part);
      if (!next) throw new Error(`${this.constructor.name}.${op}: no submodule ${JSON.stringify(path)} (missing ${JSON.stringify(part)})`);
      return next;
    }, this);
  }

  getParameter(name: string): Tensor {
    const [owner, leaf] = this.resolve(name, "getParameter");
    const p = owner._parameters.get(leaf);
    if (!p) throw new Error(`${this.constructor.name}.getParameter: no parameter ${JSON.stringify(name)}`);
    return p;
  }

  getBuffer(name: string): Tensor {
    const [owner, leaf] = this.resolve(name, "getBuffer");
    const b = owner._buffers.get(leaf);
    if (!b) throw new Error(`${this.constructor.name}.getBuffer: no buffer ${JSON.stringify(name)}`);
    return b;
  }

  hasParameter(name: string): boolean {
    return this._parameters.has(name);
  }

  // ---- traversal ----------------------------------------------------------------------------

  /** [name, module] pairs in pre-order, this module first (named ""), each module once. */
  namedModules(prefix = ""): Array<[string, Module]> {
    const out: Array<[string, Module]> = [];
    const seen = new Set<Module>();
    const visit = (m: Module, name: string): void => {
      if (seen.has(m)) return;
      seen.add(m);
      out.push([name, m]);
      for (const [child, c] of m._modules) visit(c, join(name, child));
    };
    visit(this, prefix);
    return out;
  }

  modules(): Module[] {
    return this.namedModules().map(([, m]) => m);
  }

  namedChildren(): Array<[string, Module]> {
    return [...this._modules];
  }

  children(): Module[] {
    return [...this._modules.values()];
  }

  /** [dotted name, parameter] in registration order; a tensor shared by two modules appears once, under its first name. */
  namedParameters(options: NamedOptions = {}): Array<[string, Tensor]> {
    return this.collect("param", options);
  }

  parameters(options: { recurse?: boolean } = {}): Tensor[] {
    return this.namedParameters(options).map(([, p]) => p);
  }

  namedBuffers(options: NamedOptions = {}): Array<[string, Tensor]> {
    return this.collect("buffer", options);
  }

  buffers(options: { recurse?: boolean } = {}): Tensor[] {
    return this.namedBuffers(options).map(([, b]) => b);
  }

  private collect(kind: "param" | "buffer", options: NamedOptions): Array<[string, Tensor]> {
    const prefix = options.prefix ?? "";
    const mods: Array<[string, Module]> = options.recurse === false ? [[prefix, this]] : this.namedModules(prefix);
    const seen = new Set<Tensor>();
    const out: Array<[string, Tensor]> = [];
    for (const [mname, m] of mods) {
      for (const [n, t] of kind === "param" ? m._parameters : m._buffers) {
        if (seen.has(t)) continue;
        seen.add(t);
        out.push([join(mname, n), t]);
      }
    }
    return out;
  }

  /** Number of parameter elements, each shared tensor counted once. */
  numParameters(options: { trainableOnly?: boolean } = {}): number {
    let n = 0;
    for (const p of this.parameters()) if (!options.trainableOnly || p.requiresGrad) n += p.numel;
    return n;
  }

  /** Calls `fn` on every module, children before parents (PyTorch's order), and returns this. */
  apply(fn: (m: Module) => void): this {
    for (const child of this._modules.values()) child.apply(fn);
    fn(this);
    return this;
  }

  // ---- modes and gradients ------------------------------------------------------------------

  train(mode = true): this {
    if (typeof mode !== "boolean") throw new TypeError(`${this.constructor.name}.train: mode must be a boolean; got ${JSON.stringify(mode)}`);
    this.training = mode;
    for (const child of this._modules.values()) child.train(mode);
    return this;
  }

  eval(): this {
    return this.train(false);
  }

  /** Drops gradients (disposing them, so their memory returns at once) or zeroes them in place. */
  zeroGrad(setToNone = true): void {
    for (const p of this.parameters()) {
      const g = p.grad;
      if (!g) continue;
      if (setToNone) {
        p.grad = null;
        g.dispose();
      } else {
        noGrad(() => g.zero_());
      }
    }
  }

  // ---- hooks --------------------------------------------------------------------------------

  registerForwardPreHook(fn: ForwardPreHook): RemovableHandle {
    return addHook(this._forwardPreHooks, fn);
  }

  registerForwardHook(fn: ForwardHook): RemovableHandle {
    return addHook(this._forwardHooks, fn);
  }

  registerBackwardPreHook(fn: BackwardPreHook): RemovableHandle {
    return addHook(this._backwardPreHooks, fn);
  }

  // ---- state --------------------------------------------------------------------------------

  /**
   * Parameters and persistent buffers by dotted name, in registration order (each module's
   * parameters, then its buffers, then its children, as PyTorch orders them). The values are the
   * live tensors, not copies: do not dispose them.
   */
  stateDict(prefix = ""): Record<string, Tensor> {
    const out: Record<string, Tensor> = {};
    const seen = new Set<Tensor>();
    for (const [mname, m] of this.namedModules(prefix)) {
      const entries = [...m._parameters, ...[...m._buffers].filter(([n]) => !m._nonPersistent.has(n))];
      for (const [n, t] of entries) {
        if (seen.has(t)) continue;
        seen.add(t);
        out[join(mname, n)] = t;
      }
    }
    return out;
  }

  /**
   * Copies `state` into the module's existing tensors in place (cast to each tensor's dtype and
   * moved to its device), so views of flat buffers stay valid. Everything is checked before anything
   * is copied: mismatched shapes always fail, missing and unexpected keys fail when `strict`; the
   * error lists all of them at once.
   */
  loadStateDict(state: Record<string, Tensor>, options: { strict?: boolean } = {}): LoadStateDictResult {
    const strict = options.strict ?? true;
    const own = this.stateDict();
    const missingKeys = Object.keys(own).filter((k) => !(k in state));
    const unexpectedKeys = Object.keys(state).filter((k) => !(k in own));
    const mismatched: string[] = [];
    for (const [k, dst] of Object.entries(own)) {
      if (!(k in state)) continue;
      const src = state[k];
      if (!isTensor(src)) mismatched.push(`${k}: expected a tensor of shape ${formatShape(dst.shape)}, got ${typeof src}`);
      else if (src.shape.length !== dst.shape.length || src.shape.some((s, i) => s !== dst.shape[i])) {
        mismatched.push(`${k}: expected shape ${formatShape(dst.shape)}, got ${formatShape(src.shape)}`);
      }
    }
    if (mismatched.length > 0 || (strict && (missingKeys.length > 0 || unexpectedKeys.length > 0))) {
      const lines = [`${this.constructor.name}.loadStateDict: the state does not match the module`];
      if (missingKeys.length) lines.push(`  missing keys (${missingKeys.length}): ${missingKeys.join(", ")}`);
      if (unexpectedKeys.length) lines.push(`  unexpected keys (${unexpectedKeys.length}): ${unexpectedKeys.join(", ")}`);
      if (mismatched.length) lines.push(`  mismatched shapes (${mismatched.length}):`, ...mismatched.map((m) => `    ${m}`));
      throw new Error(lines.join("\n"));
    }
    noGrad(() => {
      // copy_ casts to the destination dtype and moves across devices.
      for (const [k, dst] of Object.entries(own)) if (k in state && state[k] !== dst) dst.copy_(state[k]);
    });
    return { missingKeys, unexpectedKeys };
  }

  /**
   * Moves every parameter and buffer to a device ("cpu", "cuda:0") or casts the floating ones to a
   * dtype. Tensors are replaced (their old storage is disposed), so build optimizers after `to()`;
   * tied tensors stay tied. Gradients move with their parameters. A module built on the meta device
   * has nothing to move: `materializeModule` gives it memory and its initial values instead.
   */
  to(target: DType | string): this {
    const isDType = (DTYPES as readonly string[]).includes(target);
    if (!isDType && normalizeDevice(target) !== "meta") {
      const onMeta = [...this.namedParameters(), ...this.namedBuffers()].find(([, t]) => t.device === "meta");
      if (onMeta) {
        throw new Error(
          `${this.constructor.name}.to(${JSON.stringify(target)}): ${onMeta[0]} (and any other tensor built under withDevice("meta")) ` +
            `is on the meta device and has no data to move; use materializeModule(module, ${JSON.stringify(target)}) to allocate ` +
            `and initialise it there`,
        );
      }
    }
    const converted = new Map<Tensor, Tensor>();
    const convert = (t: Tensor): Tensor => {
      if (isDType) return t.dtype === "int32" || t.dtype === target ? t : t.to(target as DType);
      return t.device === target ? t : t.to(target);
    };
    noGrad(() => {
      for (const m of this.modules()) {
        for (const [n, p] of m._parameters) {
          let q = converted.get(p);
          if (!q) {
            const moved = convert(p);
            if (moved === p) continue;
            q = parameter(moved, p.requiresGrad);
            const g = p.grad;
            if (g) {
              q.grad = convert(g);
              if (g !== q.grad) g.dispose();
            }
            converted.set(p, q);
          }
          m._parameters.set(n, q);
        }
        for (const [n, b] of m._buffers) {
          let q = converted.get(b);
          if (!q) {
            q = convert(b);
            if (q === b) continue;
            q.untrack();
            converted.set(b, q);
          }
          m._buffers.set(n, q);
        }
      }
    });
    for (const old of converted.keys()) old.dispose();
    return this;
  }

  /** A one-line summary; subclasses add their hyperparameters with `extraRepr`. */
  extraRepr(): string {
    return "";
  }

  toString(): string {
    const head = `${this.constructor.name}(${this.extraRepr()}`;
    if (this._modules.size === 0) return `${head})`;
    const inner = [...this._modules].map(([n, m]) => `  (${n}): ${m.toString().split("\n").join("\n  ")}`);
    return `${head}${this.extraRepr() ? ", " : ""}\n${inner.join("\n")}\n)`;
  }
}

function addHook<F>(map: Map<number, F>, fn: F): RemovableHandle {
  if (typeof fn !== "function") throw new TypeError(`hook must be a function; got ${typeof fn}`);
  const id = nextHookId++;
  map.set(id, fn);
  return { id, remove: () => void map.delete(id) };
}
