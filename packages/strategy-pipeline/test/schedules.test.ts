/**
 * Schedules as data: each is consistent by the validator (which finds misordered, unmatched and
 * deadlocking lists), and the simulator reproduces the bubbles the papers give. See the simulator's
 * [Note: what the bubble is] for what is measured: idle over all rank time (bubbleFraction), and
 * idle over busy time (bubbleRatio, Megatron's t_pb / t_id), fill and drain included.
 */
import { describe, expect, it } from "vitest";
import { type Action, type PipelineSchedule, SCHEDULE_NAMES, buildSchedule, simulate, validateSchedule } from "../src/index";

const SHAPES = [
  [1, 1],
  [1, 4],
  [2, 2],
  [2, 4],
  [3, 6],
  [4, 4],
  [4, 8],
  [4, 12],
  [8, 16],
] as const;

describe("every schedule is consistent", () => {
  for (const name of SCHEDULE_NAMES) {
    it(`${name} at every shape`, () => {
      for (const [p, m] of SHAPES) {
        for (const v of name === "interleaved" ? [1, 2, 3] : [1]) {
          const s = buildSchedule(name, { stages: p, microBatches: m, virtualStages: v });
          expect(validateSchedule(s), `${name} p=${p} m=${m} v=${v}`).toEqual([]);
        }
      }
    });
  }
});

function edit(s: PipelineSchedule, rank: number, fn: (list: Action[]) => Action[]): PipelineSchedule {
  return { ...s, ranks: s.ranks.map((l, r) => (r === rank ? fn([...l]) : l)) };
}

describe("the validator finds what cannot run", () => {
  const s = buildSchedule("1f1b", { stages: 2, microBatches: 3 });
  it("a backward before its forward", () => {
    const bad = edit(s, 1, (l) => {
      const f = l.findIndex((a) => a.kind === "F" && a.microBatch === 0);
      const b = l.findIndex((a) => a.kind === "B" && a.microBatch === 0);
      [l[f], l[b]] = [l[b], l[f]];
      return l;
    });
    expect(validateSchedule(bad).join("\n")).toContain("rank 1: B(micro-batch 0, stage 1) before its F");
  });
  it("a missing action and an unmatched message", () => {
    const bad = edit(s, 0, (l) => l.filter((a) => !(a.kind === "send_act" && a.microBatch === 2)));
    const errors = validateSchedule(bad).join("\n");
    expect(errors).toContain("send_act(micro-batch 2, stage 0) is missing");
    expect(errors).toContain("channel act:1: micro-batches sent in order [0,1] but received in order [0,1,2]");
  });
  it("messages received out of order", () => {
    const bad = edit(s, 1, (l) => {
      const i = l.findIndex((a) => a.kind === "recv_act" && a.microBatch === 0);
      const j = l.findIndex((a) => a.kind === "recv_act" && a.microBatch === 1);
      [l[i], l[j]] = [l[j], l[i]];
      return l;
    });
    expect(validateSchedule(bad).join("\n")).toContain("received in order [1,0,2]");
  });
  it("a deadlock: both ranks receive before they send", () => {
    // Rank 0 waits for micro-batch 0's gradient before it has run (and sent) micro-batch 0's forward.
    const bad = edit(s, 0, (l) => {
      const recv = l.findIndex((x) => x.kind === "recv_grad" && x.microBatch === 0);
      const [a] = l.splice(recv, 1);
      return [a, ...l];
    });
    const errors = validateSchedule(bad).join("\n");
    expect(errors).toContain("deadlocks");
    expect(errors).toContain("rank 0 waits in recv_grad(micro-batch 0, stage 0, peer 1)");
  });
});

const close = (a: number, b: number) => expect(Math.abs(a - b)).toBeLessThan(1e-12);

describe("bubbles (F = B = 1 per stage; unsplit backward B + W = 2 where W is given)", () => {
  for (const [p, m] of SHAPES.filter(([p]) => p > 1)) {
    it(`p=${p} m=${m}`, () => {
      const costs = { forward: 1, backward: 1 };
      const g = simulate(buildSchedule("gpipe", { stages: p, microBatches: m }), costs);
      close(g.bubbleFraction, (p - 1) / (m + p - 1));
      const f = simulate(buildSchedule("1f1b", { stages: p, microBatches: m }), costs);
      close(f.bubbleRatio, (p - 1) / m);
      close(f.bubbleFraction, (p - 1) / (m + p - 1));
      if (m % p === 0) {
        for (const v of [2, 4]) {
          const i = simulate(buildSchedule("interleaved", { stages: p, microBatches: m, virtualStages: v }), costs);
          close(i.bubbleRatio, (p - 1) / (v * m));
        }
      }
      // ZB-H1 against 1F1B with F = B = W: about a third of the idle time.
      const w = { forward: 1, backward: 1, weight: 1 };
      const zb = simulate(buildSchedule("zb-h1", { stages: p, microBatches: m }), w);
      const ref = simulate(buildSchedule("1f1b", { stages: p, microBatches: m }), w);
      expect(zb.bubbleRatio / ref.bubbleRatio).toBeLessThanOrEqual(0.45);
      expect(zb.makespan).toBeLessThan(ref.makespan);
    });
  }

  it("ZB-H1 holds no more micro-batches in flight than 1F1B's peak (p)", () => {
    for (const [p, m] of SHAPES) {
      const s = buildSchedule("zb-h1", { stages: p, microBatches: m });
      for (const list of s.ranks) {
        let live = 0;
        let peak = 0;
        for (const a of list) {
          if (a.kind === "F") peak = Math.max(peak, ++live);
          if (a.kind === "W") live--;
        }
        expect(peak).toBeLessThanOrEqual(p);
      }
    }
  });

  it("communication cost delays receivers and lengthens the run", () => {
    const s = buildSchedule("1f1b", { stages: 4, microBatches: 8 });
    const a = simulate(s, { forward: 1, backward: 2 });
    const b = simulate(s, { forward: 1, backward: 2, communication: 0.5 });
    // At least the fill's and the drain's p−1 hops each lie on the critical path.
    expect(b.makespan).toBeGreaterThanOrEqual(a.makespan + 2 * 3 * 0.5);
  });
});
