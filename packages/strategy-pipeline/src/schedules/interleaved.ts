/**
 * Interleaved 1F1B (Narayanan et al. 2021, Megatron-LM): each rank holds v model chunks (stages
 * r, r+p, ...), so a micro-batch crosses every rank v times and the bubble shrinks to (p−1)/(v·m)
 * of the ideal time, for v times the messages. Micro-batches go in groups of p: forward runs a
 * group through chunk 0, then through chunk 1, ...; backward runs the chunks in reverse. Rank r
 * warms up with (p−r−1)·2 + (v−1)·p forwards, as Megatron's schedule does, then alternates.
 * Needs m to be a multiple of p (Megatron's condition).
 */
import { type Action, type PipelineSchedule, type ScheduleShape, B, F, checkShape, withMessages } from "./action";

export function interleaved(shape: ScheduleShape): PipelineSchedule {
  const s = checkShape({ ...shape, virtualStages: shape.virtualStages ?? 2 }, "interleaved");
  const { stages: p, microBatches: m, virtualStages: v } = s;
  if (m % p !== 0) {
    throw new RangeError(`interleaved schedule microBatches: got ${m}; expected a multiple of stages (${p}), as Megatron's interleaving needs`);
  }
  const total = m * v;
  // k-th forward (backward) of a rank: micro-batch and chunk, in groups of p micro-batches.
  const mbOf = (k: number) => Math.floor(k / (p * v)) * p + (k % p);
  const chunkOf = (k: number, forward: boolean) => {
    const c = Math.floor((k % (p * v)) / p);
    return forward ? c : v - 1 - c;
  };
  const compute = Array.from({ length: p }, (_, r) => {
    const fwd = (k: number): Action => F(mbOf(k), chunkOf(k, true) * p + r);
    const bwd = (k: number): Action => B(mbOf(k), chunkOf(k, false) * p + r);
    const warmup = v === 1 ? Math.min(p - r - 1, total) : Math.min((p - r - 1) * 2 + (v - 1) * p, total);
    const out: Action[] = [];
    for (let k = 0; k < warmup; k++) out.push(fwd(k));
    for (let k = 0; k < total - warmup; k++) out.push(fwd(warmup + k), bwd(k));
    for (let k = total - warmup; k < total; k++) out.push(bwd(k));
    return out;
  });
  return withMessages("interleaved", s, false, compute);
}
