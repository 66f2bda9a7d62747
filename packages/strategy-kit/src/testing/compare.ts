/**
 * Decision 8, checked: for the same model, seed and data, every world's per-step loss (the mean over
 * data-parallel ranks of each rank's loss on its shard) equals one device's loss on the global batch,
 * within the tolerance; each step reports the same gradient norm and the same stepped/skipped outcome.
 */
import type { RankRecord, TrainRecord } from "./protocol";

export interface RankTraining {
  readonly rank: number;
  readonly layout: RankRecord;
  readonly train: TrainRecord;
}

const relative = (a: number, b: number): number => Math.abs(a - b) / Math.max(Math.abs(b), 1e-12);

/**
 * A gradient norm adds the squares of every gradient element, so the rounding of gradients averaged
 * across ranks accumulates in it more than in a loss: it is held to ten times the loss tolerance.
 */
const GRAD_NORM_FACTOR = 10;

export interface TrainingComparison {
  readonly problems: string[];
  /** What was measured, for a passing check's message. */
  readonly summary: string;
}

export function compareTraining(
  reference: TrainRecord,
  ranks: readonly RankTraining[],
  o: { readonly tolerance: number; readonly gradientClipVal: number },
): TrainingComparison {
  const problems: string[] = [];
  const steps = reference.losses.length;
  const clipped = reference.gradNorms.flatMap((n, i) => (n !== null && n > o.gradientClipVal ? [i] : []));
  if (clipped.length === 0) {
    problems.push(`no single-device step had a gradient norm above gradientClipVal ${o.gradientClipVal}, so clipping was not exercised; lower gradientClipVal`);
  }
  // Ranks of one data-parallel group trained on the same rows: they must agree on the loss.
  const groups = new Map<number, RankTraining[]>();
  for (const r of ranks) {
    const g = groups.get(r.layout.dataParallel.rank) ?? [];
    g.push(r);
    groups.set(r.layout.dataParallel.rank, g);
    if (r.train.losses.length !== steps) problems.push(`rank ${r.rank} reported ${r.train.losses.length} losses for ${steps} steps`);
  }
  if (problems.length > 0) return { problems, summary: "" };
  for (const [dp, members] of groups) {
    for (const m of members.slice(1)) {
      const bad = m.train.losses.findIndex((l, i) => relative(l, members[0].train.losses[i]) > o.tolerance);
      if (bad >= 0) {
        problems.push(
          `ranks ${members[0].rank} and ${m.rank} share data-parallel rank ${dp} but report different losses at step ${bad}: ` +
            `${members[0].train.losses[bad]} and ${m.train.losses[bad]}`,
        );
      }
    }
  }
  let worst = 0;
  for (let step = 0; step < steps; step++) {
    const mean = [...groups.values()].reduce((s, g) => s + g[0].train.losses[step], 0) / groups.size;
    const diff = relative(mean, reference.losses[step]);
    worst = Math.max(worst, Number.isNaN(diff) ? Infinity : diff);
    if (!(diff <= o.tolerance)) {
      problems.push(
        `step ${step}: loss ${mean} (mean over ${groups.size} data-parallel rank(s)); one device: ${reference.losses[step]}; ` +
          `relative difference ${diff.toExponential(2)} > ${o.tolerance}`,
      );
    }
  }
  for (const r of ranks) {
    for (let step = 0; step < steps; step++) {
      const want = reference.gradNorms[step];
      const got = r.train.gradNorms[step];
      if (want !== null && got === null) {
        problems.push(`rank ${r.rank}, step ${step}: optimizerStep reported no gradNorm although clipping by norm was asked for`);
        break;
      }
      if (want !== null && got !== null && !(relative(got, want) <= o.tolerance * GRAD_NORM_FACTOR)) {
        problems.push(`rank ${r.rank}, step ${step}: gradient norm ${got}; one device: ${want}`);
        break;
      }
      if (r.train.stepped[step] !== reference.stepped[step]) {
        problems.push(`rank ${r.rank}, step ${step}: stepped is ${r.train.stepped[step]}; one device: ${reference.stepped[step]}`);
        break;
      }
    }
  }
  const summary =
    `largest relative loss difference ${worst.toExponential(2)} over ${steps} steps; ` +
    `losses ${reference.losses[0].toFixed(4)} → ${reference.losses[steps - 1].toFixed(4)}; clipped at step(s) ${clipped.join(", ")}`;
  return { problems, summary };
}
