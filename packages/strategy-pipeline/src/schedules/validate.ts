/**
 * Checks that a schedule can run: each stage's compute on the rank holding it, every (micro-batch,
 * stage) forward and backward exactly once (and W exactly once when backward is split), F before
 * B before W on a rank, a stage's work after its same-rank neighbour's, every message sent after
 * the data exists and received before it is used, sends and receives of a channel matched in
 * order, and (by simulating with unit costs) no set of ranks waiting on each other forever.
 * Returns every problem found, as sentences; an empty list means the schedule is consistent.
 */
import { simulate } from "../simulator";
import { type Action, type PipelineSchedule, channelOf, isCompute, rankOfStage } from "./action";

const key = (kind: string, mb: number, s: number) => `${kind}:${mb}:${s}`;

export function validateSchedule(schedule: PipelineSchedule): string[] {
  const errors: string[] = [];
  const { stages: p, microBatches: m, virtualStages: v, splitBackward } = schedule;
  const S = p * v;
  if (schedule.ranks.length !== p) errors.push(`${schedule.ranks.length} rank lists for ${p} stages`);
  /** Position of each action on its rank. */
  const at = new Map<string, { rank: number; index: number }>();
  schedule.ranks.forEach((list, r) =>
    list.forEach((a: Action, index) => {
      const k = key(a.kind, a.microBatch, a.stage);
      if (at.has(k)) errors.push(`${a.kind}(micro-batch ${a.microBatch}, stage ${a.stage}) appears twice`);
      at.set(k, { rank: r, index });
      if (a.stage < 0 || a.stage >= S || a.microBatch < 0 || a.microBatch >= m) errors.push(`rank ${r}: ${a.kind} names micro-batch ${a.microBatch}, stage ${a.stage}, out of range`);
      else if (isCompute(a) && rankOfStage(a.stage, p) !== r) errors.push(`rank ${r} runs ${a.kind} of stage ${a.stage}, which lives on rank ${rankOfStage(a.stage, p)}`);
      if (a.kind === "W" && !splitBackward) errors.push(`rank ${r}: W in a schedule whose backward is not split`);
    }),
  );
  const before = (a: string, b: string, what: string) => {
    const x = at.get(a);
    const y = at.get(b);
    if (!x || !y) return;
    if (x.rank === y.rank && x.index > y.index) errors.push(what);
  };
  for (let s = 0; s < S; s++) {
    const r = rankOfStage(s, p);
    for (let mb = 0; mb < m; mb++) {
      const kinds = splitBackward ? ["F", "B", "W"] : ["F", "B"];
      for (const kind of kinds) if (!at.has(key(kind, mb, s))) errors.push(`${kind}(micro-batch ${mb}, stage ${s}) is missing`);
      before(key("F", mb, s), key("B", mb, s), `rank ${r}: B(micro-batch ${mb}, stage ${s}) before its F`);
      before(key("B", mb, s), key("W", mb, s), `rank ${r}: W(micro-batch ${mb}, stage ${s}) before its B`);
      const local = (t: number) => t >= 0 && t < S && rankOfStage(t, p) === r;
      if (s > 0 && local(s - 1)) before(key("F", mb, s - 1), key("F", mb, s), `rank ${r}: F(micro-batch ${mb}, stage ${s}) before F of stage ${s - 1}`);
      if (s + 1 < S && local(s + 1)) before(key("B", mb, s + 1), key("B", mb, s), `rank ${r}: B(micro-batch ${mb}, stage ${s}) before B of stage ${s + 1}`);
      // Messages: made before sent, received before used, present where a boundary crosses ranks.
      if (s + 1 < S && !local(s + 1)) {
        if (!at.has(key("send_act", mb, s))) errors.push(`send_act(micro-batch ${mb}, stage ${s}) is missing`);
        if (!at.has(key("recv_grad", mb, s))) errors.push(`recv_grad(micro-batch ${mb}, stage ${s}) is missing`);
        before(key("F", mb, s), key("send_act", mb, s), `rank ${r}: send_act(micro-batch ${mb}, stage ${s}) before its F`);
        before(key("recv_grad", mb, s), key("B", mb, s), `rank ${r}: B(micro-batch ${mb}, stage ${s}) before its recv_grad`);
      }
      if (s > 0 && !local(s - 1)) {
        if (!at.has(key("recv_act", mb, s))) errors.push(`recv_act(micro-batch ${mb}, stage ${s}) is missing`);
        if (!at.has(key("send_grad", mb, s))) errors.push(`send_grad(micro-batch ${mb}, stage ${s}) is missing`);
        before(key("recv_act", mb, s), key("F", mb, s), `rank ${r}: F(micro-batch ${mb}, stage ${s}) before its recv_act`);
        before(key("B", mb, s), key("send_grad", mb, s), `rank ${r}: send_grad(micro-batch ${mb}, stage ${s}) before its B`);
      }
    }
  }
  // Each channel's sends and receives carry the same micro-batches in the same order, between the right ranks.
  const sends = new Map<string, number[]>();
  const recvs = new Map<string, number[]>();
  schedule.ranks.forEach((list, r) =>
    list.forEach((a) => {
      if (isCompute(a)) return;
      const sending = a.kind === "send_act" || a.kind === "send_grad";
      const target = a.kind === "send_act" ? a.stage + 1 : a.kind === "send_grad" ? a.stage - 1 : a.kind === "recv_act" ? a.stage - 1 : a.stage + 1;
      if (a.peer !== rankOfStage(target, p)) errors.push(`rank ${r}: ${a.kind}(micro-batch ${a.microBatch}, stage ${a.stage}) names peer ${a.peer}; stage ${target} lives on rank ${rankOfStage(target, p)}`);
      const map = sending ? sends : recvs;
      const { key: ch } = channelOf(a);
      map.set(ch, [...(map.get(ch) ?? []), a.microBatch]);
    }),
  );
  for (const ch of new Set([...sends.keys(), ...recvs.keys()])) {
    const a = (sends.get(ch) ?? []).join(",");
    const b = (recvs.get(ch) ?? []).join(",");
    if (a !== b) errors.push(`channel ${ch}: micro-batches sent in order [${a}] but received in order [${b}]`);
  }
  if (errors.length === 0) {
    try {
      simulate(schedule, { forward: 1, backward: 1, weight: 1 });
    } catch (err) {
      errors.push((err as Error).message);
    }
  }
  return errors;
}

export class InvalidScheduleError extends Error {
  override readonly name = "InvalidScheduleError";
}

export function assertValidSchedule(schedule: PipelineSchedule): PipelineSchedule {
  const errors = validateSchedule(schedule);
  if (errors.length > 0) throw new InvalidScheduleError(`${schedule.name} schedule is inconsistent:\n  ${errors.slice(0, 10).join("\n  ")}`);
  return schedule;
}
