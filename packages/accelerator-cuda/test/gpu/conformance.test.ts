/**
 * The tensor engine's shared conformance suite (@fulgur/tensor/testing) on cuda:0: every case runs
 * forward and backward through the frontend (autograd, views, casts) on the GPU in float32 and
 * bfloat16 and is compared with the CPU backend in float64, with the suite's own tolerances.
 */
import { conformanceCases, runConformanceCase, runSplitBackwardCase } from "@fulgur/tensor/testing";
import { describe, expect, it } from "vitest";
import { NO_GPU, hasGpu } from "./harness";

describe.skipIf(!hasGpu)("tensor conformance suite on cuda:0", () => {
  for (const dtype of ["float32", "bfloat16"] as const) {
    for (const c of conformanceCases()) {
      it(`${c.name} (${dtype})`, () => {
        const r = runConformanceCase(c, "cuda:0", dtype, 1234);
        expect(r.ok, `${r.name}: ${r.detail} (tolerance ${r.tolerance})`).toBe(true);
      });
    }
  }
});

// The input/weight split of backward on the GPU's kernels: bit-identical to the ordinary backward.
describe.skipIf(!hasGpu)("split backward on cuda:0", () => {
  for (const dtype of ["float32", "bfloat16"] as const) {
    for (const c of conformanceCases().filter((c) => c.inputs.some((s) => s.grad))) {
      it(`${c.name} (${dtype})`, () => {
        const r = runSplitBackwardCase(c, "cuda:0", dtype, 1234);
        // Atomics (the embedding's scatter) reorder sums between any two runs: held to rounding there.
        if (r.deterministic) expect(r.mismatches).toEqual([]);
        else expect(r.maxRelativeDifference).toBeLessThan(dtype === "float32" ? 1e-5 : 2e-2);
      });
    }
  }
});

if (!hasGpu) describe("tensor conformance suite on cuda:0", () => it.skip(NO_GPU, () => {}));
