/** The starvation probe's counting and attribution (FULGUR_CUDA_STARVATION), over a scripted stream query. */
import { describe, expect, it } from "vitest";
import { createStarvationProbe } from "../src/launchStarvation";

describe("starvation probe", () => {
  it("counts launches that found their stream idle, by kernel, cuBLASLt products by their dimensions, most idle first", () => {
    // cudaStreamQuery: 0 (cudaSuccess) when everything queued has run, 600 (cudaErrorNotReady) otherwise.
    const answers = [0, 600, 0, 0, 600, 600];
    const p = createStarvationProbe(() => answers.shift()!, 2);
    p.probe("layernorm_fwd", 1n);
    p.probe("layernorm_fwd", 1n);
    p.probe("cublasLt:1x4096x8192x2048:bfloat16->bfloat16:ep192", 1n);
    p.probe("cublasLt:1x4096x8192x2048:bfloat16->bfloat16:ep164", 1n);
    p.probe("ew_binary_flat", 1n);
    p.probe("attn_fwd", 1n);
    expect(p.report()).toEqual({
      launches: 6,
      idle: 3,
      top: [
        { kernel: "cublasLt:1x4096x8192x2048", launches: 2, idle: 2 },
        { kernel: "layernorm_fwd", launches: 2, idle: 1 },
      ],
    });
  });
});
