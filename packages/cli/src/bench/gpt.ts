/**
 * The GPT training benchmark, measured as the PyTorch anchor (shared/bench/gpt_torch.py) measures:
 * one fixed batch of random tokens [B, T + 1], AdamW, `warmup` untimed steps, then `steps` timed
 * steps between two device synchronisations; peak memory over the timed steps; the loss of the
 * last step. It runs the real Trainer with GPTLanguageModel, so the number includes what a user's
 * training pays (scopes, precision, strategy), and several devices go through the strategy by name.
 */
import { type Accelerator, hasDataParallelLayout } from "@fulgur/core";
import { GPT_CONFIGS, type GPTConfigName, gptFlopsPerStep, gptParamCount } from "@fulgur/nn";
import { getBackend, randint } from "@fulgur/tensor";
import { type Callback, DataLoader, type Dataset, Trainer } from "@fulgur/trainer";
import { GPTLanguageModel } from "@fulgur/trainer/demos";

/** The anchor's sizes after its mode (`d L H T B`), replacing the named config's. */
export interface GptBenchSize {
  readonly dModel: number;
  readonly nLayers: number;
  readonly nHeads: number;
  readonly seqLen: number;
  readonly microBatch: number;
}

export interface GptBenchOptions {
  readonly config: GPTConfigName;
  /** `--size d,L,H,T,B`: the model and micro-batch, with the named config's vocabulary; null: the config's. */
  readonly size: GptBenchSize | null;
  readonly strategy: string;
  /** Devices of this node (= the world size: the benchmark runs on one node). */
  readonly devices: number;
  readonly steps: number;
  readonly warmup: number;
  readonly precision: string;
  /** A registered accelerator name, already resolved from "auto". */
  readonly accelerator: string;
  /** Options for the strategy (`--strategy-options`), as the Trainer's `strategyOptions`. */
  readonly strategyOptions: Readonly<Record<string, unknown>>;
  /**
   * Micro-batches of the config's micro-batch in one step's batch (`--micro-batches`, the anchor's
   * PP_MICRO): the batch has B·M rows and a strategy that runs the whole batch (the pipeline) splits
   * it into M. 1 for every other strategy.
   */
  readonly microBatches: number;
}

/** The anchor's RESULT fields, in its order. */
export interface GptBenchResult {
  readonly framework: "fulgur";
  readonly strategy: string;
  readonly devices: number;
  readonly params: number;
  readonly d: number;
  readonly L: number;
  readonly T: number;
  readonly B: number;
  /** Present when the step's batch is several micro-batches (the anchor's pipeline modes print it). */
  readonly micro_batches?: number;
  readonly step_ms: number;
  readonly tok_s_gpu: number;
  readonly tflops_gpu: number;
  readonly peak_gib: number;
  readonly loss: number;
  /** A pipeline's measured bubble on rank 0 (idle over its span of the last batch). */
  readonly bubble_rank0?: number;
}

/** The anchor rounds to fixed decimals; on a CPU the figures are tiny, so keep 3 significant digits there instead of printing 0. */
function round(v: number, decimals: number): number {
  const fixed = Number(v.toFixed(decimals));
  if (fixed !== 0 || v === 0 || !Number.isFinite(v)) return fixed;
  return Number(v.toPrecision(3));
}

/** The same B rows every step, as the anchor reuses one batch. */
class RepeatedBatch implements Dataset<Int32Array> {
  constructor(
    private readonly rows: Int32Array[],
    readonly length: number,
  ) {}
  get(index: number): Int32Array {
    return this.rows[index % this.rows.length];
  }
}

/** Times the steps after the warm-up; synchronises only at the two ends, so queued work is not serialised. */
class StepTimer implements Callback {
  readonly name = "StepTimer";
  start = NaN;
  end = NaN;
  peakBytes = NaN;

  constructor(
    private readonly warmup: number,
    private readonly total: number,
  ) {}

  private sync(trainer: Trainer): void {
    getBackend(trainer.strategy!.rootDevice).synchronize();
  }

  private begin(trainer: Trainer): void {
    this.sync(trainer);
    getBackend(trainer.strategy!.rootDevice).resetPeak();
    this.start = performance.now();
  }

  onFitStart(trainer: Trainer): void {
    if (this.warmup === 0) this.begin(trainer);
  }

  onTrainBatchEnd(trainer: Trainer): void {
    if (trainer.globalStep === this.warmup && this.warmup > 0) this.begin(trainer);
    if (trainer.globalStep === this.total) {
      this.sync(trainer);
      this.end = performance.now();
      const acc = trainer.accelerator as Accelerator;
      this.peakBytes = acc.memoryStats(trainer.strategy!.rootDevice).peak;
    }
  }
}

/** Runs the benchmark in this process (one rank). Returns the result on global rank 0, null elsewhere. */
export async function gptTrainingBench(o: GptBenchOptions): Promise<GptBenchResult | null> {
  const cfg = { ...GPT_CONFIGS[o.config], ...(o.size ?? {}) };
  const { microBatch: _b, ...model } = cfg;
  const B = cfg.microBatch;
  const T = cfg.seqLen;
  const M = o.microBatches;
  const total = o.warmup + o.steps;
  const tokens = randint(0, cfg.vocabSize, [B * M, T + 1], { seed: 1234 });
  const flat = Int32Array.from(tokens.toArray());
  tokens.dispose();
  const rows = Array.from({ length: B * M }, (_, i) => flat.subarray(i * (T + 1), (i + 1) * (T + 1)));
  // Every rank sees B·M rows per step: the sampler splits length / devices samples per rank.
  const data = new RepeatedBatch(rows, B * M * total * o.devices);
  const loader = new DataLoader(data, { batchSize: B * M, shuffle: false });
  // The anchor's optimizer: torch.optim.AdamW(lr=1e-4) with PyTorch's defaults.
  const module = new GPTLanguageModel({ config: model, lr: 1e-4, weightDecay: 0.01, betas: [0.9, 0.999], seed: 0 });
  const timer = new StepTimer(o.warmup, total);
  const trainer = new Trainer({
    accelerator: o.accelerator as "cpu",
    devices: o.devices,
    strategy: o.strategy,
    strategyOptions: { ...o.strategyOptions, ...(M > 1 ? { microBatches: M } : {}) },
    precision: o.precision,
    maxSteps: total,
    // Read the loss once, at the last step (reading it earlier would synchronise mid-measurement).
    logEveryNSteps: total,
    logger: false,
    enableProgressBar: false,
    enableCheckpointing: false,
    callbacks: [timer],
    seed: 0,
  });
  await trainer.fit(module, loader);
  if (!trainer.isGlobalZero) return null;
  if (!Number.isFinite(timer.end) || !Number.isFinite(timer.start)) {
    throw new Error(`bench: the Trainer stopped at step ${trainer.globalStep} of ${total}; no timing was taken`);
  }
  const seconds = (timer.end - timer.start) / 1e3 / o.steps;
  const bubble = rankBubble(trainer.strategy);
  // Tokens per step per device, as the anchor counts them: each data-parallel replica takes B·M rows
  // and a pipeline's ranks share theirs.
  const s = trainer.strategy!;
  const replicas = hasDataParallelLayout(s) ? s.dataParallelSize : trainer.worldSize;
  const tok = (B * M * T * replicas) / trainer.worldSize;
  return {
    framework: "fulgur",
    strategy: o.strategy,
    devices: trainer.worldSize,
    params: gptParamCount(model),
    d: cfg.dModel,
    L: cfg.nLayers,
    T,
    B,
    ...(M > 1 ? { micro_batches: M } : {}),
    step_ms: round(seconds * 1e3, 1),
    tok_s_gpu: Math.round(tok / seconds),
    tflops_gpu: round(gptFlopsPerStep(model, tok) / seconds / 1e12, 1),
    peak_gib: round(timer.peakBytes / 2 ** 30, 2),
    loss: round(trainer.lastLoss, 3),
    ...(bubble === null ? {} : { bubble_rank0: round(bubble, 3) }),
  };
}

interface Span {
  readonly start: number;
  readonly end: number;
}

/**
 * Rank 0's idle share of its last batch, from the compute timeline a pipeline strategy records
 * (`lastTimeline()`), or null for strategies without one. The times are the host's: on a GPU they
 * are when the host issued each action, which a receive's wait ties to the data's arrival.
 */
function rankBubble(strategy: unknown): number | null {
  const timeline = (strategy as { lastTimeline?: () => readonly Span[] }).lastTimeline?.();
  if (!timeline || timeline.length === 0) return null;
  const first = Math.min(...timeline.map((a) => a.start));
  const last = Math.max(...timeline.map((a) => a.end));
  const busy = timeline.reduce((sum, a) => sum + (a.end - a.start), 0);
  return last > first ? Math.max(0, 1 - busy / (last - first)) : 0;
}
