/**
 * Schedules as data. A schedule is, for each pipeline rank, the ordered list of what that rank does:
 * compute actions (F: forward of one micro-batch through one stage; B: its backward, input
 * gradients and, unless the schedule splits it, weight gradients too; W: the deferred weight
 * gradients of a split backward, Zero Bubble's W) and the point-to-point messages between stages.
 *
 * [Note: stages and ranks] `stages` is the number of pipeline ranks p. With v virtual stages per
 * rank (interleaved schedules) the model is cut into S = p·v stages; stage s lives on rank s mod p,
 * as its chunk ⌊s / p⌋ (Megatron's layout: rank 0 holds stages 0, p, 2p, ...). Every action names
 * the (virtual) stage it belongs to, so an executor and a simulator read the same list.
 *
 * [Note: channels] A message crosses a stage boundary. Activations of stage s go to stage s+1 and
 * gradients of stage s go to stage s-1; each (boundary, direction) is its own channel (its own tag),
 * matched in order, so several channels between the same two ranks never mix (interleaving at p=2).
 */

export type ComputeKind = "F" | "B" | "W";
export type CommKind = "send_act" | "recv_act" | "send_grad" | "recv_grad";
export type ActionKind = ComputeKind | CommKind;

export interface Action {
  readonly kind: ActionKind;
  readonly microBatch: number;
  /** The (virtual) stage: for a send, the stage that produced the data; for a receive, the stage that uses it. */
  readonly stage: number;
  /** The other pipeline rank of a send or receive. */
  readonly peer?: number;
}

export type ScheduleName = "gpipe" | "1f1b" | "interleaved" | "zb-h1";
export const SCHEDULE_NAMES: readonly ScheduleName[] = ["gpipe", "1f1b", "interleaved", "zb-h1"];

export interface PipelineSchedule {
  readonly name: ScheduleName;
  /** Pipeline ranks p. */
  readonly stages: number;
  readonly microBatches: number;
  /** Stages per rank v (1 except for interleaved schedules). */
  readonly virtualStages: number;
  /** True when backward is split into B (input gradients) and W (weight gradients). */
  readonly splitBackward: boolean;
  /** Per pipeline rank, its actions in order. */
  readonly ranks: readonly (readonly Action[])[];
}

export interface ScheduleShape {
  readonly stages: number;
  readonly microBatches: number;
  readonly virtualStages?: number;
}

export const isCompute = (a: Action): boolean => a.kind === "F" || a.kind === "B" || a.kind === "W";

/** Rank holding virtual stage `s` (see [Note: stages and ranks]). */
export const rankOfStage = (s: number, p: number): number => s % p;

/** The channel a message travels on (see [Note: channels]): its tag and a key for matching. */
export function channelOf(a: Action): { readonly tag: number; readonly key: string } {
  switch (a.kind) {
    case "send_act":
      return { tag: 2 * (a.stage + 1), key: `act:${a.stage + 1}` };
    case "recv_act":
      return { tag: 2 * a.stage, key: `act:${a.stage}` };
    case "send_grad":
      return { tag: 2 * a.stage + 1, key: `grad:${a.stage}` };
    case "recv_grad":
      return { tag: 2 * (a.stage + 1) + 1, key: `grad:${a.stage + 1}` };
    default:
      throw new TypeError(`channelOf: ${a.kind} is not a message`);
  }
}

export function checkShape(shape: ScheduleShape, name: string): Required<ScheduleShape> {
  const { stages, microBatches } = shape;
  const v = shape.virtualStages ?? 1;
  const int = (field: string, x: number) => {
    if (!Number.isInteger(x) || x < 1) throw new RangeError(`${name} schedule ${field}: got ${JSON.stringify(x)}; expected a positive integer`);
  };
  int("stages", stages);
  int("microBatches", microBatches);
  int("virtualStages", v);
  return { stages, microBatches, virtualStages: v };
}

/**
 * Adds the messages to per-rank compute orders: a receive right before the compute that needs the
 * data (it blocks there), a send right after the compute that made it (sends never block: the
 * data is queued). Neighbouring stages on the same rank (p = 1) hand over locally, with no message.
 */
export function withMessages(
  name: ScheduleName,
  shape: Required<ScheduleShape>,
  splitBackward: boolean,
  compute: readonly (readonly Action[])[],
): PipelineSchedule {
  const p = shape.stages;
  const last = p * shape.virtualStages - 1;
  const ranks = compute.map((list, r) => {
    const out: Action[] = [];
    for (const a of list) {
      const { microBatch, stage: s } = a;
      const prev = rankOfStage(s - 1, p);
      const next = rankOfStage(s + 1, p);
      if (a.kind === "F") {
        if (s > 0 && prev !== r) out.push({ kind: "recv_act", microBatch, stage: s, peer: prev });
        out.push(a);
        if (s < last && next !== r) out.push({ kind: "send_act", microBatch, stage: s, peer: next });
      } else if (a.kind === "B") {
        if (s < last && next !== r) out.push({ kind: "recv_grad", microBatch, stage: s, peer: next });
        out.push(a);
        if (s > 0 && prev !== r) out.push({ kind: "send_grad", microBatch, stage: s, peer: prev });
      } else out.push(a);
    }
    return Object.freeze(out);
  });
  return Object.freeze({ name, ...shape, splitBackward, ranks: Object.freeze(ranks) });
}

export const F = (microBatch: number, stage: number): Action => ({ kind: "F", microBatch, stage });
export const B = (microBatch: number, stage: number): Action => ({ kind: "B", microBatch, stage });
export const W = (microBatch: number, stage: number): Action => ({ kind: "W", microBatch, stage });
