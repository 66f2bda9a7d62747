/** docs/guide/pipeline.md shows each schedule exactly as the renderer draws it: a guide that drifts fails here. */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { renderSchedule } from "../src/index";

const GUIDE = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "docs", "guide", "pipeline.md");

describe("docs/guide/pipeline.md", () => {
  const blocks = [...readFileSync(GUIDE, "utf8").matchAll(/```text\n([\s\S]*?)```/g)].map((m) => m[1]);
  for (const schedule of ["gpipe", "1f1b", "interleaved", "zb-h1"] as const) {
    it(`shows ${schedule} as renderSchedule prints it`, () => {
      expect(blocks).toContain(renderSchedule({ stages: 4, microBatches: 8, schedule }));
    });
  }
});
