/**
 * 1F1B, PipeDream-flush (Narayanan et al. 2021): rank r runs p−r−1 forwards to fill the pipe, then
 * alternates one forward and one backward, then drains. Same bubble as GPipe, (p−1)/m of the ideal
 * time, but at most p−r micro-batches' activations alive on rank r instead of m.
 */
import { type Action, type PipelineSchedule, type ScheduleShape, B, F, checkShape, withMessages } from "./action";

/** The compute order of rank r; `backward(i)` emits what backward of micro-batch i is (B, or B then W). */
export function oneFOneBOrder(p: number, m: number, r: number, backward: (i: number) => Action[] = (i) => [B(i, r)]): Action[] {
  const warmup = Math.min(p - r - 1, m);
  const out: Action[] = [];
  for (let i = 0; i < warmup; i++) out.push(F(i, r));
  for (let j = 0; j < m - warmup; j++) out.push(F(warmup + j, r), ...backward(j));
  for (let j = m - warmup; j < m; j++) out.push(...backward(j));
  return out;
}

export function oneFOneB(shape: ScheduleShape): PipelineSchedule {
  const s = checkShape({ ...shape, virtualStages: 1 }, "1f1b");
  const compute = Array.from({ length: s.stages }, (_, r) => oneFOneBOrder(s.stages, s.microBatches, r));
  return withMessages("1f1b", s, false, compute);
}
