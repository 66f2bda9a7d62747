/**
 * One rank's view of a model cut into pipeline stages between the blocks of a ModuleList (the GPT:
 * embeddings → blocks → final norm, head and loss). The strategy builds the model on `meta` and
 * materialises only this rank's stages (see strategy.ts, [Note: a rank holds its stages]).
 * Parameters of stages on other ranks are frozen (`requiresGrad` false): they get no gradient, so
 * the optimizer, which skips parameters without one, never moves them, and clipping never counts them.
 *
 * [Note: running one stage through the user's training step] The executor runs the user's
 * `trainingStep` on a micro-batch for every forward, so the loss stays the user's code. While a
 * stage s with blocks [start, end) runs, blocks before `start` return their input unchanged, block
 * `start` takes the activation received from stage s−1 instead of what reached it, and, unless s is
 * the last stage, the output of block `end − 1` is kept and the rest of the step is cut short (a
 * private exception caught by `forward`). So stage s computes exactly its blocks and the last stage
 * returns the loss. Limits: a model that does work between blocks, or recomputes blocks
 * (activation checkpointing), does not cut this way; dropout draws differ from one device's.
 *
 * [Note: what precedes the blocks, on later stages] Every stage runs the step from its start, so
 * a later stage's rank still calls the embeddings, whose parameters it does not hold (they stay on
 * `meta`). Such a module (its own parameters all on meta, outside the blocks) runs on meta: its
 * tensor arguments are replaced by empty meta tensors of the same shape and dtype, so the lookup
 * yields a meta result of the right shape at no cost, which flows, unread, to the block that takes
 * the received activation instead.
 */
import { type Module, ModuleList } from "@fulgur/nn";
import { type Tensor, empty, isTensor } from "@fulgur/tensor";
import { type StageBounds, balancedBounds, boundsFromSplitPoints } from "./partition";

const CUT_SHORT = Symbol("pipeline stage output captured");

interface Active {
  readonly start: number;
  readonly end: number;
  readonly input: Tensor | null;
  readonly capture: boolean;
  captured: Tensor | null;
}

/** The ModuleList to cut between: the named one, else the one holding the most parameters. */
export function findBlocks(root: Module, name: string | null): { name: string; list: Module[] } {
  const lists = root.namedModules().filter(([, m]) => m instanceof ModuleList || m.constructor.name === "ModuleList");
  const chosen = name === null ? lists.sort((a, b) => b[1].numParameters() - a[1].numParameters())[0] : lists.find(([n]) => n === name);
  if (!chosen) {
    const found = lists.map(([n]) => JSON.stringify(n)).join(", ") || "none";
    throw new RangeError(`pipeline: ${name === null ? "the model has no ModuleList of blocks to cut between" : `no ModuleList named ${JSON.stringify(name)}`} (ModuleLists found: ${found})`);
  }
  return { name: chosen[0], list: chosen[1].children() as Module[] };
}

export interface StagedModelOptions {
  readonly blocks: string | null;
  readonly splitPoints: readonly number[] | null;
  readonly balance: "blocks" | "params";
  /** Virtual stages in all, p·v. */
  readonly stages: number;
}

export class StagedModel {
  readonly bounds: StageBounds;
  /** The stage of each parameter of the root module, by qualified name. */
  readonly stageOf: ReadonlyMap<string, number>;
  private readonly blocks: Module[];
  /** "model.blocks." for the GPT in a TrainingModule. */
  private readonly blocksPrefix: string;
  private active: Active | null = null;
  private readonly undo: (() => void)[] = [];

  constructor(
    private readonly root: Module,
    options: StagedModelOptions,
  ) {
    const found = findBlocks(root, options.blocks);
    this.blocks = found.list;
    const S = options.stages;
    const prefix = found.name === "" ? "" : `${found.name}.`;
    this.blocksPrefix = prefix;
    const named = root.namedParameters();
    const blockOf = (n: string): number => {
      if (!n.startsWith(prefix)) return -1;
      const i = Number(n.slice(prefix.length).split(".")[0]);
      return Number.isInteger(i) ? i : -1;
    };
    const firstBlockParam = named.findIndex(([n]) => blockOf(n) >= 0);
    if (options.splitPoints) this.bounds = boundsFromSplitPoints(options.splitPoints, this.blocks.length, S);
    else {
      const weights = this.blocks.map((b) => (options.balance === "params" ? b.numParameters() : 1));
      if (options.balance === "params") {
        // What precedes the blocks runs on stage 0 and what follows on the last: count it there.
        named.forEach(([n, p], i) => {
          if (blockOf(n) >= 0) return;
          weights[i < firstBlockParam ? 0 : weights.length - 1] += p.numel;
        });
      }
      this.bounds = balancedBounds(weights, S);
    }
    const stageOfBlock = (i: number) => this.bounds.findIndex((b, s) => s < S && i >= b && i < this.bounds[s + 1]);
    this.stageOf = new Map(named.map(([n], i) => [n, blockOf(n) >= 0 ? stageOfBlock(blockOf(n)) : i < firstBlockParam ? 0 : S - 1]));
  }

  get stageCount(): number {
    return this.bounds.length - 1;
  }

  /** Names of the parameters of the given stages, in the module's order. */
  namesOf(stages: readonly number[]): string[] {
    return this.root.namedParameters().filter(([n]) => stages.includes(this.stageOf.get(n)!)).map(([n]) => n);
  }

  /** Qualified names of the blocks of the given stages, in order. */
  blockPaths(stages: readonly number[]): string[] {
    return stages.flatMap((s) => Array.from({ length: this.bounds[s + 1] - this.bounds[s] }, (_, k) => `${this.blocksPrefix}${this.bounds[s] + k}`));
  }

  /** Parameters of the given stages, in the module's order. */
  parametersOf(stages: readonly number[]): Tensor[] {
    return this.root.namedParameters().filter(([n]) => stages.includes(this.stageOf.get(n)!)).map(([, p]) => p);
  }

  /** Freezes every parameter outside `owned` and routes the blocks' forwards through the stage cut. */
  install(owned: readonly number[]): void {
    for (const [n, p] of this.root.namedParameters()) {
      if (owned.includes(this.stageOf.get(n)!) || !p.requiresGrad) continue;
      p.requiresGrad_(false);
      this.undo.push(() => p.requiresGrad_(true));
    }
    // Through `call`, not `forward`: a block's hooks (FSDP's gather and reshard inside a stage, its
    // backward pre-hook) run around the cut as around any call.
    this.blocks.forEach((block, i) => this.replace(block, "call", (call, args) => this.blockForward(i, call, args)));
    // [Note: what precedes the blocks, on later stages]
    const inBlocks = new Set(this.blocks.flatMap((b) => b.modules()));
    for (const m of this.root.modules()) {
      const own = m.parameters({ recurse: false });
      if (inBlocks.has(m) || own.length === 0 || own.some((p) => p.device !== "meta")) continue;
      this.replace(m, "forward", (call, args) => call(...args.map((a) => (isTensor(a) && a.device !== "meta" ? empty(a.shape, { dtype: a.dtype, device: "meta" }) : a))));
    }
  }

  /** Routes `module[method]` through `route` (given the original, bound) until `release()`. */
  private replace(module: Module, method: "call" | "forward", route: (call: (...a: unknown[]) => unknown, args: unknown[]) => unknown): void {
    const target = module as unknown as Record<string, unknown>;
    const own = Object.hasOwn(module, method);
    const original = target[method] as (...a: unknown[]) => unknown;
    const call = original.bind(module);
    target[method] = (...args: unknown[]) => route(call, args);
    this.undo.push(() => {
      if (own) target[method] = original;
      else delete target[method];
    });
  }

  release(): void {
    while (this.undo.length) this.undo.pop()!();
  }

  /**
   * Runs `step` (the user's training step on one micro-batch) as stage `stage` with `input` as its
   * incoming activation (null on stage 0); returns the stage's output activation, or the loss on
   * the last stage. See [Note: running one stage through the user's training step]. An activation
   * belongs to no scope: the caller disposes of it.
   */
  forward(stage: number, input: Tensor | null, step: () => Tensor): Tensor {
    const last = stage === this.stageCount - 1;
    const active: Active = { start: this.bounds[stage], end: this.bounds[stage + 1], input, capture: !last, captured: null };
    this.active = active;
    try {
      const loss = step();
      if (!last) throw new Error(`pipeline: stage ${stage} never ran its last block (block ${active.end - 1}); does the training step call every block in order?`);
      return loss;
    } catch (err) {
      if (err !== CUT_SHORT || !active.captured) throw err;
      return active.captured;
    } finally {
      this.active = null;
    }
  }

  private blockForward(i: number, call: (...a: unknown[]) => unknown, args: unknown[]): unknown {
    const a = this.active;
    if (!a) return call(...args);
    if (i < a.start) return args[0];
    const out = call(...(i === a.start && a.input ? [a.input, ...args.slice(1)] : args));
    if (a.capture && i === a.end - 1) {
      // Out of every scope: the step's own scopes (the loss's, the modules') close as the exception
      // passes; the caller owns the activation and disposes of it after its backward.
      a.captured = (out as Tensor).untrack();
      throw CUT_SHORT;
    }
    return out;
  }
}
