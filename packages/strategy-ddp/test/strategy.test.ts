/**
 * The strategy in one process: options validated at construction, the registry table, the
 * WORLD_SIZE check, a world of one on the real CPU group (setup, step, checkpoints, teardown), the
 * accelerator's own process group, the collectives across two in-process ranks, and the flags
 * workers are started with.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { CONTRACT_VERSION, type Accelerator, type ClusterEnvironment, Registry, StrategyRegistry, assertStrategy } from "@fulgur/core";
import { FullCheckpointIO } from "@fulgur/checkpoint-io";
import { LocalEnvironment, StoreServer, TcpStore, createCpuProcessGroup } from "@fulgur/distributed";
import { SGD } from "@fulgur/nn";
import { randn, scope, zeros } from "@fulgur/tensor";
import { StrategySetupError, broadcastJson, broadcastTensors, createPrecision, reduceScalar, workerNodeFlags } from "@fulgur/strategy-kit";
import { DDPOptionError, DDPStrategy, DDP_STRATEGIES, registerStrategies } from "../src/index";
import { RecordingGroup, ThreeLayers } from "./helpers";

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

function cpu(extra: Partial<Accelerator> & Record<string, unknown> = {}): Accelerator {
  return {
    contractVersion: CONTRACT_VERSION,
    name: "cpu",
    isAvailable: () => true,
    deviceCount: () => 64,
    deviceFor: () => "cpu",
    setupDevice: async () => {},
    memoryStats: () => ({ allocated: 0, reserved: 0, peak: 0 }),
    teardown: async () => {},
    ...extra,
  } as Accelerator;
}

function context(cluster: ClusterEnvironment, devices = 1, accelerator = cpu()) {
  return { accelerator, precision: createPrecision("32-true"), checkpointIO: new FullCheckpointIO(), cluster, devices, numNodes: 1 };
}

function fakeCluster(worldSize: number, rank: number): ClusterEnvironment {
  return {
    name: "torchelastic",
    detect: () => true,
    createsProcessesExternally: true,
    worldSize: () => worldSize,
    globalRank: () => rank,
    localRank: () => rank,
    nodeRank: () => 0,
    mainAddress: () => "127.0.0.1",
    mainPort: () => 1,
  };
}

describe("options", () => {
  it("fills in the defaults and freezes them", () => {
    const s = new DDPStrategy();
    expect(s.options).toEqual({
      bucketCapMb: 25,
      findUnusedParameters: false,
      staticGraph: false,
      gradientAsBucketView: true,
      broadcastBuffers: true,
      timeoutMs: 1_800_000,
      startMethod: "relaunch",
      verbose: true,
      killGraceMs: 5000,
      processGroupBackend: "auto",
    });
    expect(Object.isFrozen(s.options)).toBe(true);
    assertStrategy(s);
  });

  it("rejects a bad option at construction, naming the option, the value and what is allowed", () => {
    expect(() => new DDPStrategy({ bucketCapMb: -1 })).toThrow("ddp option bucketCapMb: got -1; expected a number of MiB greater than 0 (default 25)");
    expect(() => new DDPStrategy({ startMethod: "fork" as never })).toThrow('ddp option startMethod: got "fork"; expected one of "relaunch", "spawn"');
    expect(() => new DDPStrategy({ timeoutMs: 1.5 })).toThrow(/timeoutMs: got 1\.5; expected a positive integer number of milliseconds/);
    expect(() => new DDPStrategy({ findUnusedParameters: "yes" as never })).toThrow('ddp option findUnusedParameters: got "yes"; expected true or false');
    const err = (() => {
      try {
        new DDPStrategy({ bucketSize: 3 } as never, "ddp_spawn");
      } catch (e) {
        return e as DDPOptionError;
      }
    })();
    expect(err).toBeInstanceOf(DDPOptionError);
    expect(err?.option).toBe("bucketSize");
    expect(err?.message).toMatch(/^ddp_spawn: unknown option\(s\) "bucketSize"; allowed options are timeoutMs, startMethod, killGraceMs, processGroupBackend, bucketCapMb, findUnusedParameters/);
  });
});

describe("registration", () => {
  const names = [
    "ddp",
    "ddp_spawn",
    "ddp_fork",
    "ddp_find_unused_parameters_true",
    "ddp_find_unused_parameters_false",
    "ddp_spawn_find_unused_parameters_true",
    "ddp_spawn_find_unused_parameters_false",
    "ddp_notverbose",
    "ddp_static_graph",
  ];

  it("registers the whole family from the table, with descriptions and defaults, once", () => {
    const registry = new Registry("strategy", assertStrategy, {});
    expect(registerStrategies(registry as never)).toEqual(names);
    expect(registerStrategies(registry as never)).toEqual([]);
    for (const e of registry.list()) {
      expect(e.description.length).toBeGreaterThan(20);
      expect(e.package).toBe("@fulgur/strategy-ddp");
    }
    const spawn = registry.create("ddp_spawn_find_unused_parameters_true") as DDPStrategy;
    expect(spawn.name).toBe("ddp_spawn_find_unused_parameters_true");
    expect(spawn.options).toMatchObject({ startMethod: "spawn", findUnusedParameters: true });
    expect((registry.create("ddp_fork") as DDPStrategy).options.startMethod).toBe("spawn");
    expect((registry.create("ddp_static_graph") as DDPStrategy).options.staticGraph).toBe(true);
    expect((registry.create("ddp_notverbose") as DDPStrategy).options.verbose).toBe(false);
    // User options override the entry's defaults; a bad one fails when the strategy is made.
    expect((registry.create("ddp_spawn", { bucketCapMb: 50 }) as DDPStrategy).options).toMatchObject({ startMethod: "spawn", bucketCapMb: 50 });
    expect(() => registry.create("ddp", { staticGraph: 1 })).toThrow("ddp option staticGraph: got 1; expected true or false");
    expect(DDP_STRATEGIES.map((e) => e.name)).toEqual(names);
  });

  it("importing the package registered every name in the global registry", () => {
    for (const n of names) expect(StrategyRegistry.has(n)).toBe(true);
    expect(StrategyRegistry.create("ddp")).toBeInstanceOf(DDPStrategy);
  });
});

describe("setup", () => {
  it("refuses a WORLD_SIZE that is not devices × numNodes, naming both", async () => {
    const s = new DDPStrategy();
    await expect(s.setup(context(fakeCluster(2, 0), 3))).rejects.toThrow(StrategySetupError);
    await expect(s.setup(context(fakeCluster(2, 0), 3))).rejects.toThrow(
      /says WORLD_SIZE=2, but the Trainer was asked for devices=3 × numNodes=1 = 3 processes/,
    );
  });

  it("trains a world of one through the real CPU group like a single device, and saves and loads checkpoints", async () => {
    const s = new DDPStrategy({ verbose: false });
    await s.setup(context(new LocalEnvironment({})));
    expect([s.globalRank, s.worldSize, s.isGlobalZero, s.rootDevice, s.processGroup.backend]).toEqual([0, 1, true, "cpu", "tcp"]);
    const model = new ThreeLayers();
    const plain = new ThreeLayers();
    await s.setupModule(model);
    const opt = await s.setupOptimizer(new SGD(model.parameters(), { lr: 0.1 }));
    const plainOpt = new SGD(plain.parameters(), { lr: 0.1 });
    for (let i = 0; i < 2; i++) {
      scope(() => s.backward(model.forward(randn([4, 8], { seed: i })).square().sum()));
      const r = await s.optimizerStep(opt, { gradientClipVal: 100 });
      expect(r.stepped).toBe(true);
      expect(r.gradNorm).toBeGreaterThan(0);
      scope(() => plain.forward(randn([4, 8], { seed: i })).square().sum().backward());
      plainOpt.step();
      plainOpt.zeroGrad();
    }
    model.parameters().forEach((p, i) => expect(p.toArray()).toEqual(plain.parameters()[i].toArray()));
    // zeroGrad after the step kept the bucket views.
    expect(model.parameters()[0].grad!.toArray().every((v) => v === 0)).toBe(true);
    expect(await s.reduce(3.5)).toBe(3.5);
    expect(await s.broadcast({ a: [1, 2] })).toEqual({ a: [1, 2] });
    await s.barrier();

    const dir = mkdtempSync(join(tmpdir(), "ddp-ckpt-"));
    dirs.push(dir);
    const path = join(dir, "model.safetensors");
    await s.saveCheckpoint({ tensors: await s.moduleStateDict(model), meta: { step: 2 } }, path);
    const loaded = await s.loadCheckpoint(path);
    expect(loaded.meta.step).toBe(2);
    const fresh = new ThreeLayers(5);
    await s.loadModuleStateDict(fresh, loaded.tensors);
    fresh.parameters().forEach((p, i) => expect(p.toArray()).toEqual(model.parameters()[i].toArray()));
    await s.teardown();
    await s.teardown();
    await expect(s.reduce(1)).rejects.toThrow("ddp.reduce: the strategy was torn down (fit() has ended)");
    await expect(s.broadcast(1)).rejects.toThrow(/ddp\.broadcast: the strategy was torn down/);
    // The wrappers are gone: zeroGrad is the optimizer's own again.
    expect(Object.prototype.hasOwnProperty.call(opt, "zeroGrad")).toBe(false);
  });

  it("reduces gradients on the accelerator's own process group when it provides one", async () => {
    const group = new RecordingGroup(0, 1);
    const seen: unknown[] = [];
    const accelerator = cpu({
      createProcessGroup: async (o: { rank: number; size: number }) => {
        seen.push(o);
        return group;
      },
    });
    const s = new DDPStrategy({ verbose: false, bucketCapMb: 300 / 2 ** 20 });
    await s.setup(context(new LocalEnvironment({}), 1, accelerator));
    expect(seen).toMatchObject([{ rank: 0, size: 1 }]);
    expect(s.processGroup).toBe(group);
    const model = await s.setupModule(new ThreeLayers());
    const opt = await s.setupOptimizer(new SGD(model.parameters(), { lr: 0.1 }));
    scope(() => s.backward((model as ThreeLayers).forward(randn([2, 8], { seed: 1 })).sum()));
    await s.optimizerStep(opt, {});
    expect(group.calls.map((c) => [c.op, c.reduceOp, c.tensor.numel])).toEqual([
      ["allReduce", "avg", 72],
      ["allReduce", "avg", 72],
      ["allReduce", "avg", 72],
    ]);
    await s.teardown();
  });

  it("noBackwardSync defers the reduction to the next synchronising backward", async () => {
    const group = new RecordingGroup(0, 1);
    const s = new DDPStrategy({ verbose: false });
    await s.setup(context(new LocalEnvironment({}), 1, cpu({ createProcessGroup: async () => group })));
    const model = (await s.setupModule(new ThreeLayers())) as ThreeLayers;
    const opt = await s.setupOptimizer(new SGD(model.parameters(), { lr: 0.1 }));
    const out = s.noBackwardSync(model, () => {
      scope(() => s.backward(model.forward(randn([2, 8], { seed: 1 })).sum()));
      return 7;
    });
    expect(out).toBe(7);
    expect(group.calls).toHaveLength(0);
    scope(() => s.backward(model.forward(randn([2, 8], { seed: 2 })).sum()));
    expect(group.calls).toHaveLength(1);
    await s.optimizerStep(opt, {});
    await s.teardown();
  });
});

describe("collectives across two in-process ranks over TCP", () => {
  it("broadcasts module state, JSON values and reduces scalars", async () => {
    const server = await StoreServer.start({ host: "127.0.0.1", port: 0, token: "t" });
    const stores = await Promise.all([0, 1].map(() => TcpStore.connect({ host: "127.0.0.1", port: server.port, token: "t" })));
    const groups = await Promise.all(stores.map((store, rank) => createCpuProcessGroup({ store, rank, size: 2, token: "t", name: "ddp-test" })));
    try {
      const models = [new ThreeLayers(1), new ThreeLayers(2)];
      const bufs = [zeros([3]).fill_(1), zeros([3])];
      // A tiny cap splits the state into several flat messages.
      await Promise.all(groups.map((g, r) => broadcastTensors(g, [...models[r].parameters(), bufs[r]], 0, undefined, 400)));
      models[1].parameters().forEach((p, i) => expect(p.toArray()).toEqual(models[0].parameters()[i].toArray()));
      expect(bufs[1].toArray()).toEqual([1, 1, 1]);
      const values = await Promise.all(groups.map((g, r) => broadcastJson(g, r === 1 ? { text: "näive ✓", n: [1, 2.5] } : null, 1)));
      expect(values).toEqual([{ text: "näive ✓", n: [1, 2.5] }, { text: "näive ✓", n: [1, 2.5] }]);
      expect(await Promise.all(groups.map((g, r) => reduceScalar(g, r + 0.25, "sum")))).toEqual([1.5, 1.5]);
      expect(await Promise.all(groups.map((g, r) => reduceScalar(g, r * 10, "avg")))).toEqual([5, 5]);
      await expect(broadcastJson(groups[0], 1, 2)).rejects.toThrow("broadcast src: got 2; expected a rank from 0 to 1");
    } finally {
      await Promise.all(groups.map((g) => g.destroy()));
      await Promise.all(stores.map((s) => s.close()));
      await server.close();
    }
  });
});

describe("worker flags", () => {
  it("passes node flags on but not debugger flags, and leaves tsx to the launcher for TypeScript scripts", () => {
    const argv = ["--max-old-space-size=4096", "--inspect=9229", "--require", "/x/tsx/dist/preflight.cjs", "--import", "file:///x/tsx/dist/loader.mjs", "--import", "./setup.mjs"];
    expect(workerNodeFlags("train.ts", argv)).toEqual(["--max-old-space-size=4096", "--import", "./setup.mjs"]);
    expect(workerNodeFlags("train.mjs", argv)).toEqual([
      "--max-old-space-size=4096",
      "--require",
      "/x/tsx/dist/preflight.cjs",
      "--import",
      "file:///x/tsx/dist/loader.mjs",
      "--import",
      "./setup.mjs",
    ]);
  });
});
