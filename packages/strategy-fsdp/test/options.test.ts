/** FSDP options are checked at construction, naming the field, the value and what is allowed. */
import { describe, expect, it } from "vitest";
import { StrategyRegistry, assertStrategy } from "@fulgur/core";
import { LocalEnvironment } from "@fulgur/distributed";
import { Block, GPT, Linear } from "@fulgur/nn";
import { createPrecision } from "@fulgur/strategy-kit";
import { conformanceCpuAccelerator } from "@fulgur/strategy-kit/testing";
import { withDevice } from "@fulgur/tensor";
import {
  type FSDPOptions,
  type FullyShardOptions,
  FSDPOptionError,
  FSDPStrategy,
  FSDP_STRATEGIES,
  fullyShard,
  fullyShardOptions,
  moduleListElements,
  registerStrategies,
  selectModules,
} from "../src";

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
    // A misspelt key inside an option's object is that option's bad value, not an unknown option.
    expect(() => new FSDPStrategy({ mixedPrecision: { paramDtype: "bfloat16", reduceDtpye: "float32" } as never })).toThrow(
      /^fsdp option mixedPrecision: got \{"paramDtype":"bfloat16","reduceDtpye":"float32"\}; expected an object \{ paramDtype\?, reduceDtype\? \}/,
    );
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

describe("fullyShard options", () => {
  const tiny = () => new GPT({ vocabSize: 16, seqLen: 8, dModel: 8, nLayers: 2, nHeads: 2 }, { seed: 0 });

  it("are checked at the call, naming the call, the field, the value and what is allowed", () => {
    const block = withDevice("meta", tiny).blocks.children()[0];
    expect(() => fullyShard(block, { reshardAfterForward: 1 })).toThrow(
      "fullyShard(Block) option reshardAfterForward: got 1; expected true, false, or an integer k >= 2 dividing the world size",
    );
    expect(() => fullyShard(block, { mixedPrecision: { reduceDtype: "fp8" as never } })).toThrow(/^fullyShard\(Block\) option mixedPrecision: got \{"reduceDtype":"fp8"\}; expected an object \{ paramDtype\?, reduceDtype\? \}/);
    expect(() => fullyShard(block, { cpuOffload: "yes" as never })).toThrow(
      'fullyShard(Block) option cpuOffload: got "yes"; expected true or false (this unit\'s slices and optimizer state in host memory, or on the device)',
    );
    expect(() => fullyShard(block, { shardingStrategy: "NO_SHARD" } as never)).toThrow(
      'fullyShard(Block): unknown option(s) "shardingStrategy"; allowed options are reshardAfterForward, mixedPrecision, cpuOffload',
    );
  });

  it("are kept per module, frozen, and the root may have its own", () => {
    const gpt = withDevice("meta", tiny);
    fullyShard(gpt.blocks.children()[1], { reshardAfterForward: false, mixedPrecision: { reduceDtype: "float32" } });
    fullyShard(gpt, { mixedPrecision: { paramDtype: "bfloat16" } });
    const own = fullyShardOptions(gpt);
    expect([...own.keys()]).toEqual(["", "blocks.1"]);
    expect(own.get("blocks.1")).toEqual({ reshardAfterForward: false, mixedPrecision: { reduceDtype: "float32" }, cpuOffload: null });
    expect(Object.isFrozen(own.get("blocks.1"))).toBe(true);
    expect(own.get("")!.mixedPrecision).toEqual({ paramDtype: "bfloat16" });
  });

  /**
   * Sets up `options`' strategy alone in this process (world 1) and shards the tiny GPT with its
   * blocks marked by `unit` (one options object for all, or one per block); returns where each unit lives.
   */
  async function shardAlone(options: FSDPOptions, unit: FullyShardOptions | readonly FullyShardOptions[]): Promise<[string, string][]> {
    const strategy = new FSDPStrategy(options);
    await strategy.setup({ accelerator: conformanceCpuAccelerator(), precision: createPrecision("32-true"), cluster: new LocalEnvironment({}), devices: 1, numNodes: 1 });
    try {
      const gpt = tiny();
      gpt.blocks.children().forEach((block, i) => fullyShard(block, Array.isArray(unit) ? unit[i] : unit));
      await strategy.setupModule(gpt);
      return strategy.sharding.placement().map((u) => [u.name, u.optimizerState]);
    } finally {
      await strategy.teardown();
    }
  }

  it("cpuOffload places a unit's slices and optimizer state in host memory or on the device, whatever the strategy's", async () => {
    expect(await shardAlone({}, [{ cpuOffload: true }, {}])).toEqual([
      ["blocks.0", "host"],
      ["blocks.1", "device"],
      ["", "device"],
    ]);
    expect(await shardAlone({ cpuOffload: true }, [{}, { cpuOffload: false }])).toEqual([
      ["blocks.0", "host"],
      ["blocks.1", "device"],
      ["", "host"],
    ]);
    expect(await shardAlone({ cpuOffload: true }, { cpuOffload: true })).toEqual([
      ["blocks.0", "host"],
      ["blocks.1", "host"],
      ["", "host"],
    ]);
    // And the estimate follows: the offloaded block's slices and state are counted in host memory only.
    const estimate = (options: FSDPOptions, units: readonly FullyShardOptions[]) => {
      const gpt = withDevice("meta", tiny);
      gpt.blocks.children().forEach((block, i) => fullyShard(block, units[i]));
      return new FSDPStrategy(options).estimateMemory({ module: gpt, precision: "32-true", microBatch: 2, worldSize: 1 });
    };
    const one = estimate({}, [{ cpuOffload: true }, {}]);
    const both = estimate({}, [{ cpuOffload: true }, { cpuOffload: true }]);
    const blockBytes = (3 * 8 * 8 + 3 * 8 + 8 * 8 + 8 + 4 * 8 * 8 + 4 * 8 + 4 * 8 * 8 + 8 + 4 * 8) * 4;
    // Master, gradient and two AdamW moments per element, fp32.
    expect(one.perHost.total).toBe(4 * blockBytes);
    expect(both.perHost.total).toBe(8 * blockBytes);
  });

  it("an offloaded unit that computes in a paramDtype has one more slice on its way up on a GPU (uploaded a unit ahead), where a unit follows the prefetched ones", () => {
    const blockBytes = (3 * 8 * 8 + 3 * 8 + 8 * 8 + 8 + 4 * 8 * 8 + 4 * 8 + 4 * 8 * 8 + 8 + 4 * 8) * 4;
    const communication = (layers: number, options: FSDPOptions, unit: FullyShardOptions) => {
      const gpt = withDevice("meta", () => new GPT({ vocabSize: 16, seqLen: 8, dModel: 8, nLayers: layers, nHeads: 2 }, { seed: 0 }));
      for (const block of gpt.blocks.children()) fullyShard(block, unit);
      return new FSDPStrategy(options).estimateMemory({ module: gpt, precision: "32-true", microBatch: 2, worldSize: 1, copiesCrossBus: true }).perDevice.communication;
    };
    const bf16 = { mixedPrecision: { paramDtype: "bfloat16" } } as const;
    // Three blocks, one prefetched: block 2 goes up while block 0 computes, beside block 1's upload.
    // Counted in fp32, as the first step's gathers send them (the bf16 host copies are written by
    // the first optimizer step: [Note: uploads in the compute dtype] in @fulgur/sharding).
    expect(communication(3, {}, { cpuOffload: true, ...bf16 }) - communication(3, {}, { cpuOffload: true })).toBe(blockBytes);
    // The strategy's paramDtype counts as the unit's own.
    expect(communication(3, bf16, { cpuOffload: true }) - communication(3, {}, { cpuOffload: true })).toBe(blockBytes);
    // No unit after the prefetched one (two blocks), or none offloaded: nothing more.
    expect(communication(2, {}, { cpuOffload: true, ...bf16 })).toBe(communication(2, {}, { cpuOffload: true }));
    expect(communication(3, { limitAllGathers: 2 }, { cpuOffload: true, ...bf16 })).toBe(communication(3, { limitAllGathers: 2 }, { cpuOffload: true }));
    expect(communication(3, {}, bf16)).toBe(0);
  });

  it("offloadStepShare: a number from 0 to 1, refused naming it where no unit is offloaded (known once the module is, so at setup and in the plan)", () => {
    expect(() => new FSDPStrategy({ offloadStepShare: 2 })).toThrow(/^fsdp option offloadStepShare: got 2; expected a number from 0 to 1/);
    const plan = (options: FSDPOptions, unit: FullyShardOptions = {}) => {
      const gpt = withDevice("meta", () => new GPT({ vocabSize: 16, seqLen: 8, dModel: 8, nLayers: 2, nHeads: 2 }, { seed: 0 }));
      fullyShard(gpt.blocks.children()[0], unit);
      return new FSDPStrategy(options).estimateMemory({ module: gpt, precision: "32-true", microBatch: 2, worldSize: 1 });
    };
    expect(() => plan({ offloadStepShare: 0.5 })).toThrow(
      "fsdp option offloadStepShare: got 0.5; it streams offloaded optimizer state through the device, but no unit is offloaded (cpuOffload on the strategy or in a unit's fullyShard); offload or leave offloadStepShare out",
    );
    expect(() => plan({ offloadStepShare: 0.5 }, { cpuOffload: true })).not.toThrow();
    expect(() => plan({ offloadStepShare: 0.5, cpuOffload: true })).not.toThrow();
  });

  it("offloadStepInBackward: refused naming it when it shards the module, where no unit is offloaded, under fp16, or with the Trainer's clipping", async () => {
    const shard = async (options: FSDPOptions, precision = "32-true", clip?: number): Promise<void> => {
      const strategy = new FSDPStrategy(options);
      await strategy.setup({ accelerator: conformanceCpuAccelerator(), precision: createPrecision(precision as "32-true"), cluster: new LocalEnvironment({}), devices: 1, numNodes: 1 });
      try {
        const gpt = tiny();
        // What the Trainer hands every module it fits (its options), as the strategy reads them.
        if (clip !== undefined) Object.assign(gpt, { trainer: { options: { gradientClipVal: clip } } });
        await strategy.setupModule(gpt);
      } finally {
        await strategy.teardown();
      }
    };
    expect(() => new FSDPStrategy({ offloadStepInBackward: 1 as never })).toThrow(/^fsdp option offloadStepInBackward: got 1; expected true or false/);
    await expect(shard({ offloadStepInBackward: true })).rejects.toThrow(
      "fsdp option offloadStepInBackward: got true; it updates offloaded units on the CPU beside backward, but no unit is offloaded (cpuOffload on the strategy or in a unit's fullyShard). Offload, or leave offloadStepInBackward out",
    );
    await expect(shard({ offloadStepInBackward: true, cpuOffload: true }, "16-mixed")).rejects.toThrow(/got true; precision "16-mixed" scales the loss.* Use bf16-mixed, or leave offloadStepInBackward out/);
    await expect(shard({ offloadStepInBackward: true, cpuOffload: true }, "32-true", 1)).rejects.toThrow(/got true; the Trainer clips gradients \(gradientClipVal 1\)/);
    await expect(shard({ offloadStepInBackward: true, cpuOffload: true }, "bf16-mixed")).resolves.toBeUndefined();
  });

  it("that the strategy cannot honour are refused when it shards the module, naming the unit and why", async () => {
    await expect(shardAlone({}, { reshardAfterForward: 2 })).rejects.toThrow(
      "fsdp fullyShard(blocks.0) option reshardAfterForward: 2 with FULL_SHARD over 1 rank(s); an integer needs FULL_SHARD and must divide the world size, 1 < k < 1 (or use true or false)",
    );
    await expect(shardAlone({ shardingStrategy: "NO_SHARD" }, { reshardAfterForward: 2 })).rejects.toThrow(/fullyShard\(blocks\.0\) option reshardAfterForward: 2 with NO_SHARD/);
  });
});
