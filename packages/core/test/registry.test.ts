import { describe, expect, it } from "vitest";
import {
  AcceleratorRegistry,
  CONTRACT_VERSION,
  Registry,
  StrategyRegistry,
  UnknownPluginError,
  assertStrategy,
  contractProblems,
  isStrategy,
  type Strategy,
} from "../src";

/** A minimal object with the shape of a Strategy, built without any Fulgur class. */
function fakeStrategy(name = "fake", extra: Record<string, unknown> = {}): Strategy {
  const fn = async () => undefined;
  return {
    contractVersion: CONTRACT_VERSION,
    name,
    rootDevice: "cpu",
    globalRank: 0,
    localRank: 0,
    worldSize: 1,
    isGlobalZero: true,
    setup: fn,
    setupModule: async (m: never) => m,
    setupOptimizer: async (o: never) => o,
    backward: () => undefined,
    optimizerStep: async () => ({ stepped: true }),
    reduce: async (v: number) => v,
    barrier: fn,
    broadcast: async <T>(v: T) => v,
    moduleStateDict: async () => ({}),
    loadModuleStateDict: fn,
    saveCheckpoint: fn,
    loadCheckpoint: async () => ({ tensors: {}, meta: {} }),
    teardown: fn,
    ...extra,
  } as unknown as Strategy;
}

describe("StrategyRegistry", () => {
  it("registers, creates with defaults overridden by options, lists and removes", () => {
    const r = new Registry<Strategy>("strategy", assertStrategy, {});
    const seen: Record<string, unknown>[] = [];
    r.register("mine", (o) => (seen.push(o), fakeStrategy(String(o.label))), {
      description: "my strategy",
      defaults: { label: "default", bucket: 25 },
      package: "my-pkg",
    });
    const s = r.create("mine", { label: "custom" });
    expect(s.name).toBe("custom");
    expect(seen.at(-1)).toEqual({ label: "custom", bucket: 25 });
    expect(r.available()).toEqual(["mine"]);
    expect(r.list()[0]).toMatchObject({ name: "mine", description: "my strategy", package: "my-pkg" });
    expect(r.remove("mine")).toBe(true);
    expect(r.has("mine")).toBe(false);
  });

  it("refuses a taken name unless override is given", () => {
    const r = new Registry<Strategy>("strategy", assertStrategy, {});
    r.register("x", () => fakeStrategy());
    expect(() => r.register("x", () => fakeStrategy())).toThrow('strategy "x" is already registered; pass { override: true } to replace it');
    r.register("x", () => fakeStrategy("second"), { override: true });
    expect(r.create("x").name).toBe("second");
  });

  it("fails at registration when the factory does not produce a strategy, naming what is missing", () => {
    const r = new Registry<Strategy>("strategy", assertStrategy, {});
    expect(() => r.register("bad", () => ({ name: "bad" }) as never)).toThrow(
      /strategy "bad" does not implement the Strategy contract: contractVersion is undefined.*setup should be a function, is missing/,
    );
    expect(() => r.register("old", () => fakeStrategy("old", { contractVersion: 0 }))).toThrow(/contractVersion is 0/);
    expect(() => r.register("bad name!", () => fakeStrategy())).toThrow(/strategy name: got "bad name!"/);
    expect(() => r.register("nofn", 42 as never)).toThrow(/factory must be a function/);
    expect(() => r.register("throws", () => { throw new Error("no GPU"); })).toThrow(/the factory threw while being checked: no GPU/);
    expect(r.available()).toEqual([]);
  });

  it("checks by shape, never by class: a plain object and a class instance both pass", () => {
    class Custom {
      contractVersion = CONTRACT_VERSION;
    }
    Object.assign(Custom.prototype, fakeStrategy("cls"));
    expect(isStrategy(fakeStrategy())).toBe(true);
    expect(isStrategy(new Custom())).toBe(true);
    expect(contractProblems("Strategy", { name: "string" }, null)).toEqual(["expected an object implementing Strategy, got null"]);
  });

  it("names the package to install for a Fulgur strategy that is not installed, and lists the rest otherwise", () => {
    const r = new Registry<Strategy>("strategy", assertStrategy, { fsdp: "@fulgur/strategy-fsdp" });
    r.register("single_device", () => fakeStrategy());
    let err: unknown;
    try {
      r.get("fsdp");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UnknownPluginError);
    expect((err as UnknownPluginError).missingPackage).toBe("@fulgur/strategy-fsdp");
    expect((err as Error).message).toBe(
      'strategy "fsdp" is provided by @fulgur/strategy-fsdp, which is not installed or not loaded: run `npm install @fulgur/strategy-fsdp` ' +
        "(inside the Fulgur repository, where the packages are not published yet, `npm ci && npm run build` links every workspace package)",
    );
    expect(() => r.get("nope")).toThrow('strategy "nope" is not registered. Registered strategy names: single_device');
  });

  it("suggests the closest name, with the package that provides it", () => {
    const r = new Registry<Strategy>("strategy", assertStrategy, { fsdp: "@fulgur/strategy-fsdp", ddp_spawn: "@fulgur/strategy-ddp" });
    r.register("single_device", () => fakeStrategy("single_device"));
    expect(() => r.get("singel_device")).toThrow('strategy "singel_device" is not registered. Did you mean "single_device"?');
    expect(() => r.get("ddp_spwan")).toThrow('Did you mean "ddp_spawn" (from @fulgur/strategy-ddp)?');
    expect(() => r.get("zzzzzzzzzz")).not.toThrow(/Did you mean/);
  });

  it("keeps a registered checkpoint IO beside the entry and checks it by shape", () => {
    const r = new Registry<Strategy>("strategy", assertStrategy, {});
    const io = { contractVersion: CONTRACT_VERSION, name: "mine", save: async () => {}, load: async () => ({ tensors: {}, meta: {} }), remove: async () => {} };
    r.register("ddp_custom_io", () => fakeStrategy("ddp_custom_io"), { checkpointIO: io });
    expect(r.get("ddp_custom_io").checkpointIO).toBe(io);
    expect(() => r.register("bad_io", () => fakeStrategy("bad_io"), { checkpointIO: { name: "x" } as never })).toThrow(
      /strategy "bad_io" checkpointIO does not implement the CheckpointIO contract: contractVersion is undefined.*save should be a function, is missing/,
    );
  });

  it("the global registries know Fulgur's own package names and are shared across copies of core", () => {
    expect(StrategyRegistry.packageFor("deepspeed_stage_3_offload")).toBe("@fulgur/strategy-zero");
    expect(StrategyRegistry.packageFor("ddp_spawn")).toBe("@fulgur/strategy-ddp");
    expect(AcceleratorRegistry.packageFor("cuda")).toBe("@fulgur/accelerator-cuda");
    const key = Symbol.for("@fulgur/core/registries@2");
    expect((globalThis as Record<symbol, { strategies: unknown }>)[key].strategies).toBe(StrategyRegistry);
  });
});
