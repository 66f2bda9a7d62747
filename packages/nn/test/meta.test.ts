// Deferred initialisation: a GPT built on the meta device and materialised unit by unit, in any
// order, has exactly the weights eager construction gives, and materialising one unit at a time
// never holds the whole model.
import { describe, expect, it } from "vitest";
import { Generator, cast, manualSeed, memoryStats, noGrad, ones, rand, randint, resetPeakMemory, scope, withDevice } from "@fulgur/tensor";
import type { Tensor } from "@fulgur/tensor";
import { AdamW, GPT, Linear, Module, materializeModule, normal_, truncNormal_ } from "../src/index";
import type { GPTConfig } from "../src/index";

const bits = (t: Tensor): number[] => Array.from(cast(t, "float64").toArray());

function expectSameState(a: Module, b: Module): void {
  const sa = a.stateDict();
  const sb = b.stateDict();
  expect(Object.keys(sb)).toEqual(Object.keys(sa));
  for (const k of Object.keys(sa)) {
    expect(sb[k].device, k).toBe("cpu");
    expect(bits(sb[k]), k).toEqual(bits(sa[k]));
  }
}

describe("GPT on the meta device", () => {
  it("holds every parameter on meta with no bytes", () => {
    const before = memoryStats("cpu").liveBytes;
    const model = withDevice("meta", () => new GPT("tiny", { seed: 1 }));
    expect(model.parameters().every((p) => p.device === "meta")).toBe(true);
    expect(model.numParameters()).toBe(136_960);
    expect(memoryStats("meta").liveBytes).toBe(0);
    expect(memoryStats("cpu").liveBytes).toBe(before);
  });

  it("materialised block by block, last block first, equals the eager GPT bit for bit; parameters keep their identity", () => {
    const eager = new GPT("tiny", { seed: 5 });
    const meta = withDevice("meta", () => new GPT("tiny", { seed: 5 }));
    const params = meta.parameters();
    // Built before materialisation: it must step the materialised parameters.
    const opt = new AdamW(params, { lr: 1e-2 });
    for (let i = meta.config.nLayers - 1; i >= 0; i--) materializeModule(meta.blocks.get(i), "cpu");
    for (const name of ["head", "lnf", "pos", "emb"]) materializeModule(meta.getSubmodule(name), "cpu");
    materializeModule(meta, "cpu"); // nothing left: a no-op
    meta.parameters().forEach((p, i) => expect(p).toBe(params[i]));
    expectSameState(eager, meta);

    const eagerOpt = new AdamW(eager.parameters(), { lr: 1e-2 });
    const data = randint(0, 256, [2, 9], { seed: 2 });
    const idx = data.slice(1, 0, 8).contiguous();
    const targets = data.slice(1, 1, 9).contiguous();
    for (const [m, o] of [[eager, eagerOpt], [meta, opt]] as const) {
      scope(() => {
        m.loss(idx, targets).backward();
        o.step();
        o.zeroGrad();
      });
    }
    expectSameState(eager, meta);
  });

  it("draws from the default generator exactly as eager construction does, leaving it in the same state", () => {
    manualSeed(21);
    const eager = new GPT("tiny");
    const after = rand([4]);
    manualSeed(21);
    const meta = withDevice("meta", () => new GPT("tiny"));
    expect(rand([4]).toArray()).toEqual(after.toArray());
    materializeModule(meta, "cpu");
    expectSameState(eager, meta);
  });

  it("replays any initialisation a model adds: a scaled residual init and truncNormal_", () => {
    class Net extends Module {
      constructor(g: Generator) {
        super();
        const fc = this.registerModule("fc", new Linear(16, 16, { generator: g }));
        noGrad(() => fc.weight.mul_(1 / Math.sqrt(2 * 4)));
        truncNormal_(this.registerModule("extra", new Linear(8, 8, { generator: g })).weight, { std: 0.02, generator: g });
        normal_(fc.bias!, 0, 0.02, g);
      }
      forward(x: Tensor): Tensor {
        return x;
      }
    }
    const eager = new Net(new Generator(4));
    const meta = withDevice("meta", () => new Net(new Generator(4)));
    materializeModule(meta.getSubmodule("extra"), "cpu");
    materializeModule(meta, "cpu");
    expectSameState(eager, meta);
  });

  it("keeps peak memory near one block while units are materialised, sharded and dropped one by one", () => {
    const config: GPTConfig = { vocabSize: 256, seqLen: 64, dModel: 64, nLayers: 6, nHeads: 4 };
    const model = withDevice("meta", () => new GPT(config, { seed: 9 }));
    const bytesOf = (ps: Tensor[]): number => ps.reduce((s, p) => s + p.numel * 4, 0);
    const modelBytes = bytesOf(model.parameters());
    const blockBytes = bytesOf(model.blocks.get(0).parameters());
    const largestParam = Math.max(...model.blocks.get(0).parameters().map((p) => p.numel * 4));
    const base = memoryStats("cpu").liveBytes;
    resetPeakMemory("cpu");
    // What a rank of four keeps: the first quarter of each parameter (a stand-in for its shard).
    const shards: Tensor[] = [];
    for (const i of [3, 0, 5, 1, 4, 2]) {
      const block = materializeModule(model.blocks.get(i), "cpu");
      for (const p of block.parameters()) {
        shards.push(scope(() => noGrad(() => p.flatten().narrow(0, 0, Math.ceil(p.numel / 4)).clone())));
        p.dispose();
      }
    }
    const kept = memoryStats("cpu").liveBytes - base;
    expect(kept).toBe(bytesOf(shards));
    const peak = memoryStats("cpu").peakBytes - base;
    // The block being made (its parameters plus one initialiser temporary) beside what was kept.
    expect(peak).toBeLessThanOrEqual(kept + blockBytes + largestParam);
    expect(peak).toBeLessThan(modelBytes / 2);
    for (const s of shards) s.dispose();
  });

  it("Module.to(device) on a meta module throws, pointing at materializeModule; ops with real tensors fail clearly", () => {
    const model = withDevice("meta", () => new Linear(4, 3));
    expect(() => model.to("cpu")).toThrow(/weight .*is on the meta device.*use materializeModule\(module, "cpu"\)/);
    expect(() => model.call(ones([2, 4]))).toThrow(/got cpu and meta: meta tensors have no data and cannot meet real ones; materialise/);
    expect(() => model.weight.toArray()).toThrow(/meta tensors have no data; materialise the module first/);
    expect(model.to("float64").weight.dtype).toBe("float64"); // casts are recorded like any op
    materializeModule(model, "cpu");
    expect(model.weight.device).toBe("cpu");
  });
});
