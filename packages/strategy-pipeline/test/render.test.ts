/** The text Gantt chart against a golden picture, and the SVG: well-formed, one rect per action. */
import { describe, expect, it } from "vitest";
import { buildSchedule, renderSchedule, renderSvg, renderText, simulate } from "../src/index";

describe("text", () => {
  it("1F1B, 2 stages, 3 micro-batches", () => {
    expect(renderSchedule({ stages: 2, microBatches: 3, schedule: "1f1b" })).toBe(
      [
        "1f1b: 2 stages, 3 micro-batches (one column = 1)",
        "rank 0 | F0 F1 .. .. B0 B0 F2 B1 B1 .. B2 B2",
        "rank 1 | .. F0 B0 B0 F1 B1 B1 F2 B2 B2 .. ..",
        "bubble: 25.0% of rank time idle (idle/busy 33.3%)",
        "",
      ].join("\n"),
    );
  });
  it("interleaved names the chunk", () => {
    const text = renderSchedule({ stages: 2, microBatches: 4, schedule: "interleaved" });
    expect(text.split("\n")[1]).toBe("rank 0 | F0a F1a F0b F1b F2a ... B0b B0b F3a B1b B1b F2b B0a B0a F3b B1a B1a ... B2b B2b ... B3b B3b B2a B2a B3a B3a");
  });
  it("a wall-clock timeline is drawn in at most maxColumns columns", () => {
    const t = simulate(buildSchedule("gpipe", { stages: 2, microBatches: 8 }), { forward: 1.3, backward: 2.9 });
    const rows = renderText(t, { maxColumns: 20 }).split("\n");
    expect(rows[1].split("| ")[1].split(" ")).toHaveLength(20);
  });
});

/** Tags open and close in order (a small check: the renderer writes no comments, CDATA or entities but &amp; &lt; &gt; &quot;). */
function wellFormed(xml: string): boolean {
  const stack: string[] = [];
  for (const m of xml.matchAll(/<(\/?)([a-zA-Z]+)([^>]*?)(\/?)>/g)) {
    const [, close, tag, , self] = m;
    if (self) continue;
    if (close) {
      if (stack.pop() !== tag) return false;
    } else stack.push(tag);
  }
  return stack.length === 0 && !/&(?!amp;|lt;|gt;|quot;)/.test(xml);
}

describe("svg", () => {
  for (const schedule of ["gpipe", "1f1b", "interleaved", "zb-h1"] as const) {
    it(`${schedule}: well-formed, one rect per action`, () => {
      const t = simulate(buildSchedule(schedule, { stages: 3, microBatches: 6 }), { forward: 1, backward: 1, weight: 1 });
      const svg = renderSvg(t);
      expect(svg.startsWith("<svg xmlns=\"http://www.w3.org/2000/svg\"")).toBe(true);
      expect(wellFormed(svg)).toBe(true);
      expect(svg.match(/<rect /g)).toHaveLength(t.ranks.flat().length);
      expect(renderSchedule({ stages: 3, microBatches: 6, schedule }, "svg")).toBe(svg);
    });
  }
});
