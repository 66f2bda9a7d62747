/**
 * Runs a schedule on paper: each rank executes its list in order; a compute action takes its cost,
 * a send takes none (the data is queued, as the executor's sends are) and a receive waits until
 * the matching send's data has arrived (send time + communication cost). With no choice left to a
 * rank this is exact, and a schedule whose ranks all wait on each other is reported as a deadlock.
 *
 * [Note: what the bubble is] `bubbleFraction` is idle rank-time over all rank-time, from time 0 to
 * the last action's end: (p−1)/(m+p−1) for GPipe and 1F1B with equal F and B. `bubbleRatio` is idle
 * time over busy time, the Megatron paper's t_pb / t_id: (p−1)/m for GPipe and 1F1B, (p−1)/(v·m)
 * for interleaving. Both count the fill at the start and the drain at the end, since a flush
 * schedule has both at every step.
 */
import { type Action, type ComputeKind, type PipelineSchedule, channelOf, isCompute } from "./schedules/action";

export interface Costs {
  /** Forward of one micro-batch through one (virtual) stage. */
  readonly forward: number;
  /** Input gradients of one micro-batch through one stage (the whole backward when it is not split). */
  readonly backward: number;
  /** Weight gradients, W; in unsplit schedules B costs backward + weight. Default 0. */
  readonly weight?: number;
  /** Time from a send to the matching receive's data. Default 0. */
  readonly communication?: number;
}

export interface TimedAction {
  readonly kind: ComputeKind;
  readonly microBatch: number;
  readonly stage: number;
  readonly start: number;
  readonly end: number;
}

export interface Timeline {
  readonly schedule: string;
  readonly stages: number;
  readonly microBatches: number;
  readonly virtualStages: number;
  /** Per rank, its compute actions in time order. */
  readonly ranks: readonly (readonly TimedAction[])[];
  readonly makespan: number;
  /** See [Note: what the bubble is]. */
  readonly bubbleFraction: number;
  readonly bubbleRatio: number;
}

export class ScheduleDeadlockError extends Error {
  override readonly name = "ScheduleDeadlockError";
}

const describe = (a: Action) => `${a.kind}(micro-batch ${a.microBatch}, stage ${a.stage}${a.peer === undefined ? "" : `, peer ${a.peer}`})`;

/** Makespan and bubble figures of per-rank timelines (also for timelines an executor recorded). */
export function summarize(
  head: { schedule: string; stages: number; microBatches: number; virtualStages: number },
  ranks: readonly (readonly TimedAction[])[],
): Timeline {
  const all = ranks.flat();
  const start = all.length ? Math.min(...all.map((a) => a.start)) : 0;
  const end = all.length ? Math.max(...all.map((a) => a.end)) : 0;
  const makespan = end - start;
  const busy = all.reduce((s, a) => s + (a.end - a.start), 0);
  const idle = ranks.length * makespan - busy;
  return Object.freeze({
    ...head,
    ranks,
    makespan,
    bubbleFraction: makespan > 0 ? idle / (ranks.length * makespan) : 0,
    bubbleRatio: busy > 0 ? idle / busy : 0,
  });
}

export function simulate(schedule: PipelineSchedule, costs: Costs): Timeline {
  const weight = costs.weight ?? 0;
  const comm = costs.communication ?? 0;
  const cost = (k: ComputeKind) =>
    k === "F" ? costs.forward : k === "W" ? weight : schedule.splitBackward ? costs.backward : costs.backward + weight;
  const p = schedule.ranks.length;
  const clock = new Array<number>(p).fill(0);
  const next = new Array<number>(p).fill(0);
  const out: TimedAction[][] = schedule.ranks.map(() => []);
  /** Per channel: arrival times of sent data, in send order; and how many were received. */
  const sent = new Map<string, number[]>();
  const received = new Map<string, number>();
  let progress = true;
  while (progress) {
    progress = false;
    for (let r = 0; r < p; r++) {
      const list = schedule.ranks[r];
      while (next[r] < list.length) {
        const a = list[next[r]];
        if (isCompute(a)) {
          const start = clock[r];
          clock[r] = start + cost(a.kind as ComputeKind);
          out[r].push({ kind: a.kind as ComputeKind, microBatch: a.microBatch, stage: a.stage, start, end: clock[r] });
        } else if (a.kind === "send_act" || a.kind === "send_grad") {
          const { key } = channelOf(a);
          const q = sent.get(key) ?? [];
          q.push(clock[r] + comm);
          sent.set(key, q);
        } else {
          const { key } = channelOf(a);
          const k = received.get(key) ?? 0;
          const arrival = sent.get(key)?.[k];
          if (arrival === undefined) break;
          received.set(key, k + 1);
          clock[r] = Math.max(clock[r], arrival);
        }
        next[r]++;
        progress = true;
      }
    }
  }
  const stuck = schedule.ranks.map((list, r) => (next[r] < list.length ? `rank ${r} waits in ${describe(list[next[r]])}` : null)).filter(Boolean);
  if (stuck.length > 0) throw new ScheduleDeadlockError(`${schedule.name} schedule deadlocks: ${stuck.join("; ")}`);
  return summarize(
    { schedule: schedule.name, stages: schedule.stages, microBatches: schedule.microBatches, virtualStages: schedule.virtualStages },
    out,
  );
}
