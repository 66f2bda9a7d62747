/**
 * An allocation that fails while a unit is gathered is the gather's (issue 15's out-of-memory
 * advice names the phase): the engine adds the phase and the unit to the backend's error.
 */
import { afterEach, describe, expect, it } from "vitest";
import { GPT } from "@fulgur/nn";
import { SoloGroup } from "@fulgur/strategy-kit";
import { fromHost, isOutOfMemory, memoryStats, setCpuMemoryLimit } from "@fulgur/tensor";
import { ShardingEngine, planUnits } from "../src";

const CONFIG = { dModel: 32, nLayers: 2, nHeads: 2, seqLen: 16, vocabSize: 64 };

afterEach(() => setCpuMemoryLimit(null));

describe("out of memory while gathering", () => {
  it("is named as the gather of its unit", () => {
    const model = new GPT(CONFIG, { seed: 3 });
    // bf16 parameters for compute: units gather a bf16 copy of their fp32 slice, even at world 1.
    const engine = new ShardingEngine(
      model,
      { shard: new SoloGroup(0), replicate: null },
      { shardingStrategy: "FULL_SHARD", mixedPrecision: { paramDtype: "bfloat16", reduceDtype: null }, prefetch: 0, reshardAfterForward: true, offload: false },
      "cpu",
    );
    for (const plan of planUnits(model, ["blocks.0", "blocks.1"])) engine.addUnit({ path: plan.path, params: plan.params.map((p) => ({ fqn: p.fqn, tensor: model.getParameter(p.fqn) })) });
    engine.ready();
    const idx = fromHost(Int32Array.from({ length: 16 }, (_, i) => i), [1, 16], "int32");
    // Room for the embeddings' outputs (16 × 32 floats each), not for a block's bf16 buffer (about 25 kB).
    setCpuMemoryLimit(memoryStats("cpu").liveBytes + 8192);
    let err: unknown = null;
    try {
      model.loss(idx, idx);
    } catch (e) {
      err = e;
    }
    setCpuMemoryLimit(null);
    expect(isOutOfMemory(err)).toBe(true);
    expect(err).toMatchObject({ phase: "gather" });
    expect((err as { where: string }).where).toBe("gathering unit blocks.0");
  });
});
