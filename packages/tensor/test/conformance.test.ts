import { describe, expect, it } from "vitest";
import { conformanceCases, runConformanceCase } from "../src/testing";
import type { DType } from "../src";

// Fresh inputs every run (METHOD.md: the fast path must compute the same function on any input);
// the seed is printed on failure so a failing draw can be replayed.
const seed = Number(process.env.FULGUR_CONFORMANCE_SEED ?? Math.floor(Math.random() * 1e9));

describe.each<DType>(["float32", "bfloat16"])("CPU backend conformance in %s (fresh inputs)", (dtype) => {
  for (const c of conformanceCases()) {
    it(c.name, () => {
      const r = runConformanceCase(c, "cpu", dtype, seed);
      expect(r.error, `${c.name} seed=${seed}: ${r.detail}`).toBeLessThanOrEqual(r.tolerance);
    });
  }
});
