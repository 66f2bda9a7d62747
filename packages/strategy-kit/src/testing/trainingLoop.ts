/**
 * The smallest training loop that drives the Strategy contract the way the Trainer does. The kit
 * sits below @fulgur/trainer, so it cannot use the Trainer; this loop makes the same calls in the
 * same order, with the same fallbacks for abilities a strategy lacks (DESIGN.md decision 13):
 *
 *   buildModule, else build on rootDevice → precision.convertModule → setupModule → setupOptimizer;
 *   per micro-batch: runBatch, else forward under precision.forwardContext and strategy.backward of
 *   loss / accumulate (inside noBackwardSync on all but the last micro-batch, when the strategy has
 *   it); per step: optimizerStep with gradient clipping by norm.
 *
 * The data is sharded by the data-parallel layout (hasDataParallelLayout), else by global rank and
 * world size. Every micro-batch runs in a memory scope, as the Trainer's steps do (decision 2).
 */
import {
  type Precision,
  type Strategy,
  buildsModule,
  hasBackwardSyncControl,
  hasDataParallelLayout,
  runsBatch,
} from "@fulgur/core";
import { AdamW, GPT, Module, type Optimizer } from "@fulgur/nn";
import { type Tensor, fromHost, noGrad, scope, scopeAsync, withDevice } from "@fulgur/tensor";
import { tokenBatch } from "./data";
import type { TrainRecord, TrainingPlan } from "./protocol";
import { injectedFailureMessage } from "./protocol";

/** The tiny GPT of DESIGN.md, whose training the kit compares across worlds. */
export const CONFORMANCE_MODEL = "tiny";
const VOCAB_SIZE = 256;
const LEARNING_RATE = 1e-2;
/** The stream cycles over this many micro-batches, so the losses fall within a few steps. */
const DISTINCT_BATCHES = 4;

/**
 * The tiny GPT under one root whose forward is the loss, so a strategy's hooks on the root module
 * run as they would on a TrainingModule. `configure` adds the GPT, as a TrainingModule's
 * `configureModel` would, so a strategy that builds modules decides where its parameters are made.
 */
export class ConformanceModel extends Module {
  constructor(private readonly seed: number) {
    super();
  }

  configure(): void {
    this.registerModule("gpt", new GPT(CONFORMANCE_MODEL, { seed: this.seed }));
  }

  forward(inputs: Tensor, targets: Tensor): Tensor {
    return (this.getSubmodule("gpt") as GPT).loss(inputs, targets);
  }
}

export interface PreparedModel {
  /** What setupModule returned: the module the loop calls (the contract's word). */
  readonly module: Module;
  readonly optimizer: Optimizer;
}

/** Builds the model where the strategy wants it, converts it to the precision, and sets it and its optimizer up. */
export async function prepareModel(strategy: Strategy, precision: Precision, seed: number): Promise<PreparedModel> {
  const model = new ConformanceModel(seed);
  const configure = (): void => noGrad(() => model.configure());
  if (buildsModule(strategy)) await strategy.buildModule(model, configure);
  else withDevice(strategy.rootDevice, configure);
  precision.convertModule(model);
  const module = await strategy.setupModule(model);
  const optimizer = await strategy.setupOptimizer(new AdamW(module.parameters(), { lr: LEARNING_RATE }));
  return { module, optimizer };
}

/** The data-parallel rank and size the loader shards by. */
export function dataParallelOf(strategy: Strategy): { rank: number; size: number } {
  if (hasDataParallelLayout(strategy)) return { rank: strategy.dataParallelRank, size: strategy.dataParallelSize };
  return { rank: strategy.globalRank, size: strategy.worldSize };
}

export interface TrainOptions {
  readonly plan: TrainingPlan;
  /** Throw (as a user's training step would) on the last rank at the first micro-batch of this step. */
  readonly failAtStep?: number;
}

/** Trains `plan.steps` optimizer steps; returns this rank's losses and what each step reported. */
export async function train(strategy: Strategy, precision: Precision, prepared: PreparedModel, o: TrainOptions): Promise<TrainRecord> {
  const { plan } = o;
  const { module, optimizer } = prepared;
  const dp = dataParallelOf(strategy);
  if (plan.rows % dp.size !== 0) {
    throw new RangeError(`the global batch of ${plan.rows} rows cannot be split over ${dp.size} data-parallel ranks`);
  }
  const rowsHere = plan.rows / dp.size;
  const failingRank = strategy.worldSize - 1;
  const losses: number[] = [];
  const gradNorms: (number | null)[] = [];
  const stepped: boolean[] = [];
  for (let step = 0; step < plan.steps; step++) {
    let sum = 0;
    for (let micro = 0; micro < plan.accumulate; micro++) {
      const batchIdx = step * plan.accumulate + micro;
      const isLast = micro === plan.accumulate - 1;
      const inject = o.failAtStep === step && micro === 0 && strategy.globalRank === failingRank;
      sum += scope(() => {
        // Thrown where a user's training step would throw, before any of this micro-batch's work, so
        // it fires whichever part of a batch-running strategy's schedule the failing rank holds.
        if (inject) throw new Error(injectedFailureMessage(failingRank, step));
        const data = tokenBatch({ seed: plan.seed, rows: plan.rows, seqLen: plan.seqLen, vocabSize: VOCAB_SIZE }, batchIdx % DISTINCT_BATCHES, dp.rank * rowsHere, rowsHere);
        const shape = [data.rows, data.seqLen];
        const batch = [
          fromHost(data.inputs, shape, "int32", { device: strategy.rootDevice }),
          fromHost(data.targets, shape, "int32", { device: strategy.rootDevice }),
        ];
        const trainingStep = (b: unknown): Tensor => {
          const [inputs, targets] = b as Tensor[];
          return precision.forwardContext(() => module.call(inputs, targets));
        };
        if (runsBatch(strategy)) {
          const loss = strategy.runBatch({ module, batch, batchIdx, lossDivisor: plan.accumulate, syncGradients: isLast, trainingStep });
          return loss.item();
        }
        const loss = trainingStep(batch);
        const scaled = plan.accumulate > 1 ? loss.div(plan.accumulate) : loss;
        if (!isLast && hasBackwardSyncControl(strategy)) strategy.noBackwardSync(module, () => strategy.backward(scaled));
        else strategy.backward(scaled);
        return loss.item();
      });
    }
    const result = await scopeAsync(() =>
      strategy.optimizerStep(optimizer, { gradientClipVal: plan.gradientClipVal, gradientClipAlgorithm: "norm" }),
    );
    losses.push(sum / plan.accumulate);
    gradNorms.push(result.gradNorm ?? null);
    stepped.push(result.stepped);
  }
  return { kind: "train", losses, gradNorms, stepped };
}
