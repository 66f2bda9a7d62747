/**
 * What a pipeline rank holds (DESIGN.md decision 13's memory estimate): its stages' parameters,
 * gradients and optimizer state, the embeddings every stage runs (see strategy.ts, [Note: a rank
 * holds its stages]), and the activations of the micro-batches in flight on it, found by walking
 * its actions in the schedule: a forward saves its stage's activations for one micro-batch, the
 * backward frees them. When the schedule splits backward, the input pass B frees all but what the
 * weight pass W needs (every op with weights keeps its saved input and its output gradient: the
 * segments' `deferredBytes`, [Note: what a weight pass waits with] in @fulgur/nn), and W frees
 * that. The device figure is the rank that holds most (under 1F1B, the first: p micro-batches in
 * flight).
 */
import type { MemoryBreakdown, MemoryEstimate, MemoryEstimateInput } from "@fulgur/core";
import type { ActivationSegment } from "@fulgur/nn";
import { EMPTY_BREAKDOWN, activationNote, autocastCopyBytes, breakdown, checkEstimateInput, modelBytes, resolveActivations } from "@fulgur/strategy-kit";
import type { PipelineSchedule } from "./schedules/action";
import type { StagedModel } from "./stagedModel";

export interface PipelineMemoryLayout {
  readonly schedule: PipelineSchedule;
  readonly staged: StagedModel;
}

interface RankMemory {
  readonly rank: number;
  readonly breakdown: MemoryBreakdown;
  readonly where: string;
}

export function estimatePipelineMemory(strategy: string, input: MemoryEstimateInput, layout: PipelineMemoryLayout): MemoryEstimate {
  checkEstimateInput(input);
  const { schedule, staged } = layout;
  const p = schedule.stages;
  const m = schedule.microBatches;
  if (input.microBatch % m !== 0) {
    throw new RangeError(`${strategy} memory estimate: microBatch ${input.microBatch} does not split into ${m} equal micro-batches; make it a multiple of microBatches`);
  }
  const profile = resolveActivations({ ...input, microBatch: input.microBatch / m });
  const stageCount = staged.stageCount;
  const stageOfModule = (module: string): number => {
    for (const [name, s] of staged.stageOf) if (name === module || name.startsWith(`${module}.`)) return s;
    return 0;
  };
  const saved = new Array<number>(stageCount).fill(0);
  const forwardTransient = new Array<number>(stageCount).fill(0);
  const backwardTransient = new Array<number>(stageCount).fill(0);
  const bySegment = new Array<ActivationSegment[]>(stageCount).fill([]).map(() => [] as ActivationSegment[]);
  for (const seg of profile?.segments ?? []) {
    const s = stageOfModule(seg.modules[0]);
    saved[s] += seg.savedBytes;
    forwardTransient[s] = Math.max(forwardTransient[s], seg.forwardTransientBytes);
    backwardTransient[s] = Math.max(backwardTransient[s], seg.backwardTransientBytes);
    bySegment[s].push(seg);
  }
  const split = schedule.splitBackward ? bySegment.map(splitBackwardOf) : null;
  const optimizerBytes = input.optimizerBytesPerParameter ?? 8;
  const accumulating = (input.accumulateGradBatches ?? 1) > 1;
  const ranks: RankMemory[] = [];
  for (let r = 0; r < p; r++) {
    const owned = Array.from({ length: schedule.virtualStages }, (_, c) => c * p + r);
    const ownedNames = staged.namesOf(owned);
    const trained = modelBytes(input, ownedNames);
    // A rank holds its own stages only (the embeddings live on the first stage).
    const held = modelBytes(input, ownedNames);
    const modules = [...new Set(ownedNames.map((n) => n.slice(0, n.lastIndexOf("."))))];
    const casts = modules.reduce((sum, path) => sum + autocastCopyBytes(input, path), 0);
    const stageGradients = new Map(owned.map((s) => [s, modelBytes(input, staged.namesOf([s])).trainable]));
    let gradients = accumulating ? trained.trainable : 0;
    const withGradients = new Set<number>();
    let live = 0;
    let best = { bytes: -1, activations: 0, gradients: 0, where: "" };
    const consider = (activations: number, where: string): void => {
      if (activations + gradients > best.bytes) best = { bytes: activations + gradients, activations, gradients, where };
    };
    // The first backward of a stage makes its gradients (under a split backward, its weight pass).
    const makeGradients = (stage: number): void => {
      if (accumulating || withGradients.has(stage)) return;
      withGradients.add(stage);
      gradients += stageGradients.get(stage) ?? 0;
    };
    for (const a of schedule.ranks[r]) {
      if (a.kind === "F") {
        consider(live + saved[a.stage] + forwardTransient[a.stage], `forward of stage ${a.stage}, micro-batch ${a.microBatch}`);
        live += saved[a.stage];
      } else if (a.kind === "B" && split) {
        // B frees what the weight pass does not need and leaves the rest until W.
        consider(live - saved[a.stage] + split[a.stage].peak, `input backward of stage ${a.stage}, micro-batch ${a.microBatch}`);
        live += split[a.stage].deferred - saved[a.stage];
      } else if (a.kind === "B") {
        makeGradients(a.stage);
        consider(live + backwardTransient[a.stage], `backward of stage ${a.stage}, micro-batch ${a.microBatch}`);
        live -= saved[a.stage];
      } else if (a.kind === "W" && split) {
        makeGradients(a.stage);
        consider(live, `weight backward of stage ${a.stage}, micro-batch ${a.microBatch}`);
        live -= split[a.stage].deferred;
      }
    }
    consider(0, "optimizer step");
    ranks.push({
      rank: r,
      where: best.where,
      breakdown: breakdown({
        parameters: held.parameters,
        gradients: best.gradients,
        optimizerState: trained.trainableElements * optimizerBytes,
        gatheredUnits: 0,
        communication: 0,
        activations: best.activations,
        workspace: casts,
      }),
    });
  }
  const worst = ranks.reduce((a, b) => (b.breakdown.total > a.breakdown.total ? b : a));
  const phase = worst.where.startsWith("forward") ? "forward" : worst.where.startsWith("backward") ? "backward" : "optimizer";
  return {
    strategy,
    perDevice: worst.breakdown,
    perHost: EMPTY_BREAKDOWN,
    disk: 0,
    notes: [
      `${schedule.name} schedule, ${p} stage(s), ${m} micro-batch(es) of ${input.microBatch / m}; pipeline rank ${worst.rank} holds most: ${ranks.map((x) => x.breakdown.total).map((b) => `${(b / 2 ** 20).toFixed(1)} MiB`).join(", ")} by rank`,
      activationNote(profile),
      `peak: ${worst.where} on pipeline rank ${worst.rank}`,
    ],
    peak: { phase, where: `${worst.where} on pipeline rank ${worst.rank}` },
  };
}

/**
 * A stage's input backward (B) under a split backward, from its segments in forward order: the
 * bytes it leaves for the weight pass (every segment's `deferredBytes`; its saved bytes where the
 * formula gives none), and its highest above what the rank held before but the stage's saved
 * activations. Segments go backward in reverse: while segment i runs, the later ones have left
 * their deferred bytes, i and the earlier ones still hold what they saved.
 */
function splitBackwardOf(segments: readonly ActivationSegment[]): { readonly deferred: number; readonly peak: number } {
  let deferred = 0;
  let peak = 0;
  let stillSaved = segments.reduce((n, s) => n + s.savedBytes, 0);
  for (let i = segments.length - 1; i >= 0; i--) {
    const s = segments[i];
    peak = Math.max(peak, deferred + stillSaved + s.backwardTransientBytes);
    stillSaved -= s.savedBytes;
    deferred += s.deferredBytes ?? s.savedBytes;
  }
  return { deferred, peak: Math.max(peak, deferred) };
}
