/** FSDP options are checked at construction, naming the field, the value and what is allowed. */
import { describe, expect, it } from "vitest";
import { StrategyRegistry, assertStrategy } from "@fulgur/core";
import { Block, GPT, Linear } from "@fulgur/nn";
import { withDevice } from "@fulgur/tensor";
import { FSDPOptionError, FSDPStrategy, FSDP_STRATEGIES, moduleListElements, registerStrategies, selectModules } from "../src";

describe("FSDP options", () => {
  it("fills in the defaults, frozen, and is a Strategy by shape", () => {
    const s = new FSDPStrategy();
    expect(s.options.shardingStrategy).toBe("FULL_SHARD");
    expect(s.options.limitAllGathers).toBe(1);
    expect(Object.isFrozen(s.options)).toBe(true);
    assertStrategy(s);
  });

  it("names a bad option, its value and what is allowed", () => {
    expect(() => new FSDPStrategy({ shardingStrategy: "SHARD_EVERYTHING" as never })).toThrow(
      'fsdp option shardingStrategy: got "SHARD_EVERYTHING"; expected one of "FULL_SHARD", "SHARD_GRAD_OP", "NO_SHARD", "HYBRID_SHARD"',
    );
    expect(() => new FSDPStrategy({ limitAllGathers: -1 })).toThrow("fsdp option limitAllGathers: got -1; expected a non-negative integer");
    expect(() => new FSDPStrategy({ mixedPrecision: { paramDtype: "fp8" as never } })).toThrow(/fsdp option mixedPrecision: got \{"paramDtype":"fp8"\}/);
    expect(() => new FSDPStrategy({ deviceMesh: [2] as never })).toThrow(/fsdp option deviceMesh: got \[2\]; expected \[replicas, shards\]/);
    for (const k of [1, 2.5, "2"]) {
      expect(() => new FSDPStrategy({ reshardAfterForward: k as never })).toThrow(
        `fsdp option reshardAfterForward: got ${JSON.stringify(k)}; expected true, false, or an integer k >= 2 dividing the world size`,
      );
    }
    const err = (() => {
      try {
        new FSDPStrategy({ wrapPolicy: [] } as never, "fsdp_cpu_offload");
      } catch (e) {
        return e as FSDPOptionError;
      }
    })();
    expect(err).toBeInstanceOf(FSDPOptionError);
    expect(err?.option).toBe("wrapPolicy");
    expect(err?.message).toMatch(/^fsdp_cpu_offload: unknown option\(s\) "wrapPolicy"; allowed options are .*autoWrapPolicy/);
  });

  it("registers its names from one table", () => {
    registerStrategies();
    for (const e of FSDP_STRATEGIES) expect(StrategyRegistry.get(e.name).package).toBe("@fulgur/strategy-fsdp");
    expect((StrategyRegistry.create("fsdp_cpu_offload") as FSDPStrategy).options.cpuOffload).toBe(true);
  });
});

describe("wrap policies", () => {
  const gpt = withDevice("meta", () => new GPT({ vocabSize: 16, seqLen: 8, dModel: 8, nLayers: 3, nHeads: 2 }));

  it("the default takes each ModuleList element", () => {
    expect(moduleListElements(gpt)).toEqual(["blocks.0", "blocks.1", "blocks.2"]);
  });

  it("classes, class names and functions pick modules, outermost first", () => {
    expect(selectModules(gpt, [Block])).toEqual(["blocks.0", "blocks.1", "blocks.2"]);
    expect(selectModules(gpt, ["Block"])).toEqual(["blocks.0", "blocks.1", "blocks.2"]);
    expect(selectModules(gpt, [Linear]).slice(0, 3)).toEqual(["blocks.0.qkv", "blocks.0.proj", "blocks.0.fc1"]);
    expect(selectModules(gpt, (_m, n) => n > 0 && n < 1000)).toContain("blocks.0");
  });
});
