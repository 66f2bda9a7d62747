/**
 * Containers: `ModuleList` (children named "0", "1", ... as in PyTorch, which is what gives the GPT
 * its "blocks.0.qkv.weight" names) and `Sequential`.
 */
import { Module } from "./module";

/** An indexable list of modules whose children are named "0", "1", ... like PyTorch's ModuleList. */
export class ModuleList<M extends Module = Module> extends Module {
  private count = 0;

  constructor(modules: Iterable<M> = []) {
    super();
    for (const m of modules) this.append(m);
  }

  append(m: M): this {
    this.registerModule(String(this.count++), m);
    return this;
  }

  get length(): number {
    return this.count;
  }

  /** The i-th module; negative indices count from the end. */
  get(i: number): M {
    const j = i < 0 ? i + this.count : i;
    if (!Number.isInteger(j) || j < 0 || j >= this.count) {
      throw new RangeError(`ModuleList.get: index ${i} is out of range for a list of ${this.count}`);
    }
    return this.getSubmodule(String(j)) as M;
  }

  *[Symbol.iterator](): IterableIterator<M> {
    for (let i = 0; i < this.count; i++) yield this.get(i);
  }

  forward(): never {
    throw new Error("ModuleList is a container and has no forward; call its modules");
  }
}

/** Modules applied one after another: forward(x) = m_n(...m_1(x)). */
export class Sequential extends Module {
  private readonly count: number;

  constructor(...modules: Module[]) {
    super();
    modules.forEach((m, i) => this.registerModule(String(i), m));
    this.count = modules.length;
  }

  forward(x: unknown): unknown {
    let y = x;
    for (let i = 0; i < this.count; i++) y = (this.getSubmodule(String(i)) as Module).call(y);
    return y;
  }
}
