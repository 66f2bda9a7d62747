/** The README's example prints what the README says it prints. */
import { describe, expect, it } from "vitest";
import { layoutUnit, segmentsOf } from "../src";

describe("README example", () => {
  it("shows three shards of two parameters", () => {
    const layout = layoutUnit([{ fqn: "w", shape: [3, 4] }, { fqn: "b", shape: [3] }], 3);
    const lines = [0, 1, 2].map((rank) => `${rank} ${segmentsOf(layout, rank).map((s) => `${s.slot.fqn}[${s.start}, ${s.end})`).join(" ")}`);
    expect(lines).toEqual(["0 w[0, 5) b[0, 0)", "1 w[5, 10) b[0, 0)", "2 w[10, 12) b[0, 3)"]);
  });
});
