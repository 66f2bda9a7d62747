/** `fulgur pipeline show` draws what @fulgur/strategy-pipeline's renderer draws, and refuses bad shapes clearly. */
import { describe, expect, it } from "vitest";
import { renderSchedule } from "@fulgur/strategy-pipeline";
import { cli } from "./helpers";

describe("fulgur pipeline show", () => {
  it("prints the renderer's timeline for the asked schedule", async () => {
    const r = await cli("pipeline", "show", "--stages", "4", "--micro-batches", "8", "--schedule", "zb-h1");
    expect(r.code, r.err).toBe(0);
    expect(r.out).toBe(renderSchedule({ stages: 4, microBatches: 8, schedule: "zb-h1" }, "text"));
  });

  it("draws SVG, and refuses a shape the schedule cannot take or a bad option", async () => {
    const svg = await cli("pipeline", "show", "--stages", "2", "--micro-batches", "4", "--format", "svg");
    expect(svg.out.startsWith("<svg")).toBe(true);
    const bad = await cli("pipeline", "show", "--stages", "4", "--micro-batches", "6", "--schedule", "interleaved", "--virtual-stages", "2");
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/multiple/);
    const wrong = await cli("pipeline", "show", "--stages", "0", "--micro-batches", "4");
    expect(wrong.code).toBe(2);
    expect(wrong.err).toContain("--stages");
  });
});
