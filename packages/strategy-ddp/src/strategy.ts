/**
 * DDPStrategy: data-parallel training on the kit's ParallelStrategy. Every rank holds the whole
 * model; parameters start equal (broadcast from rank 0), each rank runs forward and backward on
 * its shard of the batch, gradients are averaged across ranks bucket by bucket while backward
 * still runs (reducer.ts), and every rank takes the same optimizer step — so the losses are those
 * of one device on the global batch (DESIGN.md decision 8). Launching, the process group, failures
 * and collectives are the kit's; the buckets and the reducer are what is DDP's.
 */
import type { BackwardSyncControl, MemoryEstimate, MemoryEstimateInput, OptimizerStepOptions, OptimizerStepResult, PrecisionStepOptions } from "@fulgur/core";
import type { Module, Optimizer } from "@fulgur/nn";
import { ParallelStrategy, estimateReplicatedMemory, modelBytes } from "@fulgur/strategy-kit";
import { type Tensor, noGrad } from "@fulgur/tensor";
import { type DDPOptions, type ResolvedDDPOptions, parseDDPOptions } from "./api";
import { Reducer } from "./reducer";

export class DDPStrategy extends ParallelStrategy implements BackwardSyncControl {
  readonly name: string;
  readonly options: ResolvedDDPOptions;
  private reducer: Reducer | null = null;
  private module: Module | null = null;
  /** Undoes the zeroGrad wrappers installed on the module and optimizers. */
  private readonly unwrap: (() => void)[] = [];

  constructor(options: DDPOptions = {}, name = "ddp") {
    const parsed = parseDDPOptions(options, name);
    super(parsed);
    this.options = parsed;
    this.name = name;
  }

  protected override log(message: string): void {
    if (this.options.verbose) super.log(message);
  }

  override async setupModule(module: Module): Promise<Module> {
    module.to(this.rootDevice);
    // Every rank starts from rank 0's weights, whatever seed each used.
    await this.broadcastTensors([...module.parameters(), ...module.buffers()], 0);
    this.reducer?.remove();
    this.reducer = new Reducer(this.processGroup, module.namedParameters(), {
      bucketCapBytes: this.options.bucketCapMb * 2 ** 20,
      findUnusedParameters: this.options.findUnusedParameters,
      staticGraph: this.options.staticGraph,
      gradientAsBucketView: this.options.gradientAsBucketView,
      log: (m) => this.log(m),
    });
    this.module = module;
    this.wrapZeroGrad(module, () => module.parameters());
    return module;
  }

  override async setupOptimizer(optimizer: Optimizer): Promise<Optimizer> {
    this.wrapZeroGrad(optimizer, () => optimizer.paramGroups.flatMap((g) => g.params));
    return optimizer;
  }

  /**
   * Gradients in buckets must be zeroed in place, never dropped: dropping them would detach the
   * views (DESIGN.md decision 5). Other parameters keep the usual behaviour.
   */
  private wrapZeroGrad(target: Module | Optimizer, params: () => Tensor[]): void {
    const owner = target as unknown as { zeroGrad: (setToNone?: boolean) => void };
    if (Object.prototype.hasOwnProperty.call(owner, "zeroGrad")) return;
    owner.zeroGrad = (setToNone = true) => {
      this.reducer?.zeroGrad();
      for (const p of params()) {
        const g = p.grad;
        if (!g || this.reducer?.manages(p)) continue;
        if (setToNone) {
          p.grad = null;
          g.dispose();
        } else noGrad(() => g.zero_());
      }
    };
    this.unwrap.push(() => delete (owner as { zeroGrad?: unknown }).zeroGrad);
  }

  // ---- the step ----------------------------------------------------------------------------------

  override backward(loss: Tensor): void {
    this.reducer?.prepareForBackward(loss);
    super.backward(loss);
  }

  noBackwardSync<T>(_module: Module, fn: () => T): T {
    const reducer = this.reducer;
    if (!reducer) return fn();
    const previous = reducer.noSync;
    reducer.noSync = true;
    try {
      return fn();
    } finally {
      reducer.noSync = previous;
    }
  }

  /** Gradients are equal on every rank once the reducer finishes, so every rank unscales, clips and steps alike. */
  protected override async prepareStep(): Promise<Partial<PrecisionStepOptions>> {
    if (this.reducer) await this.race(this.reducer.finish());
    return {};
  }

  override async optimizerStep(optimizer: Optimizer, options: OptimizerStepOptions): Promise<OptimizerStepResult> {
    const result = await super.optimizerStep(optimizer, options);
    if (this.options.broadcastBuffers && this.module) {
      const buffers = this.module.buffers();
      if (buffers.length > 0) await this.broadcastTensors(buffers, 0);
    }
    return result;
  }

  /**
   * Replicated like single_device; the gradients live in the buckets from step to step (zeroed,
   * not freed), and without bucket views each bucket is a second copy of its gradients.
   */
  override estimateMemory(input: MemoryEstimateInput): MemoryEstimate {
    const bucketBytes = this.options.gradientAsBucketView ? 0 : modelBytes(input).trainable;
    return estimateReplicatedMemory(this.name, input, { communicationBytes: bucketBytes, gradientsPersist: true });
  }

  protected override releaseModule(): void {
    for (const undo of this.unwrap.splice(0)) undo();
    this.reducer?.remove();
    this.reducer = null;
    this.module = null;
  }
}
