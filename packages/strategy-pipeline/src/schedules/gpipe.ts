/**
 * GPipe (Huang et al. 2019): every micro-batch forward, then every micro-batch backward. All m
 * micro-batches' activations are alive at the turn; the bubble is (p−1)/(m+p−1) of the time.
 */
import { type PipelineSchedule, type ScheduleShape, B, F, checkShape, withMessages } from "./action";

export function gpipe(shape: ScheduleShape): PipelineSchedule {
  const s = checkShape({ ...shape, virtualStages: 1 }, "gpipe");
  const mbs = Array.from({ length: s.microBatches }, (_, i) => i);
  const compute = Array.from({ length: s.stages }, (_, r) => [...mbs.map((i) => F(i, r)), ...mbs.map((i) => B(i, r))]);
  return withMessages("gpipe", s, false, compute);
}
