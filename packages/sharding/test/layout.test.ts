/**
 * The flat layout of a unit (DESIGN.md decision 15): parameters back to back, padded to a multiple
 * of the shard count, each shard a contiguous slice; every element of every parameter belongs to
 * exactly one shard's segment, at the right place.
 */
import { describe, expect, it } from "vitest";
import { layoutUnit, segmentsOf } from "../src";

describe("layoutUnit / segmentsOf", () => {
  const params = [
    { fqn: "a.weight", shape: [3, 4] },
    { fqn: "a.bias", shape: [3] },
    { fqn: "b.weight", shape: [5] },
  ];

  it("pads to a multiple of the shards and slices contiguously", () => {
    const l = layoutUnit(params, 3);
    expect(l.numel).toBe(20);
    expect(l.paddedNumel).toBe(21);
    expect(l.shardNumel).toBe(7);
    expect(l.slots.map((s) => s.offset)).toEqual([0, 12, 15]);
  });

  for (const shards of [1, 2, 3, 4, 7, 25]) {
    it(`covers every element exactly once with ${shards} shard(s)`, () => {
      const l = layoutUnit(params, shards);
      const owner = new Array(l.numel).fill(-1);
      for (let r = 0; r < shards; r++) {
        for (const seg of segmentsOf(l, r)) {
          expect(seg.start).toBeLessThanOrEqual(seg.end);
          for (let k = seg.start; k < seg.end; k++) {
            const flat = seg.slot.offset + k;
            expect(owner[flat]).toBe(-1);
            owner[flat] = r;
            // Where the element sits in the shard's slice.
            expect(r * l.shardNumel + seg.localOffset + (k - seg.start)).toBe(flat);
          }
        }
      }
      expect(owner.every((o) => o >= 0)).toBe(true);
    });
  }

  it("refuses a shard count that is not a positive integer", () => {
    expect(() => layoutUnit(params, 0)).toThrow("shards: got 0; expected a positive integer");
  });
});
