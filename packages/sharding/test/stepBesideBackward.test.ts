/**
 * Offloaded units updated beside backward ([Note: the step beside backward] in
 * stepBesideBackward.ts), on a "device" of its own: the CPU backend under another name
 * ("beside:0"), so units at one rank are not resident (their master lives on the host, their
 * gathered copy on the device), and offloaded gradients come down through `readIntoAsync`, which
 * lands a copy when it is polled or waited for, as a GPU's download does once its event completes.
 * The CPU optimizer runs on two threads with no minimum, and the blocks are large enough (over
 * 1 MiB) for shared memory, so an early update runs on the worker thread while the test's thread
 * goes on with backward: a unit read before its update was waited for, or updated twice, or with
 * other hyper-parameters, would not match the step after backward to the bit.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdamW, GPT, SGD } from "@fulgur/nn";
import { SoloGroup } from "@fulgur/strategy-kit";
import { type Backend, type HostArray, type PendingRead, type PendingWork, type Tensor, type View, cpuBackend, cpuOptimizerThreadedSteps, cpuOptimizerThreads, fromHost, scope, setCpuOptimizerThreads } from "@fulgur/tensor";
import { ShardingEngine, planUnits } from "../src";
import { useCpuDevice } from "./fixtures/cpuDevice";

const DEVICE = useCpuDevice("beside", (cpu) => ({
  readIntoAsync: {
    value(this: Backend, view: View, out: HostArray): PendingRead {
      const values = cpu.read.call(this, view);
      let done = false;
      const land = (): boolean => {
        if (!done) (out as Float32Array).set(values as Float32Array);
        done = true;
        return true;
      };
      return { poll: land, wait: () => void land() };
    },
  },
}));

// Blocks of about 310k parameters (1.2 MB in fp32): their slices and moments are shared memory.
const CONFIG = { dModel: 160, nLayers: 3, nHeads: 2, seqLen: 8, vocabSize: 64 };
let threadsBefore = 1;
beforeAll(() => {
  threadsBefore = cpuOptimizerThreads();
  setCpuOptimizerThreads(2, { minElements: 0 });
});
afterAll(() => setCpuOptimizerThreads(threadsBefore, { minElements: 1 << 18 }));

function batch(seed: number): { idx: Tensor; targets: Tensor } {
  const n = 2 * CONFIG.seqLen;
  const idx = Int32Array.from({ length: n }, (_, i) => (i * 13 + 5 + seed) % CONFIG.vocabSize);
  const targets = Int32Array.from({ length: n }, (_, i) => (i * 7 + 3 + seed) % CONFIG.vocabSize);
  return { idx: fromHost(idx, [2, CONFIG.seqLen], "int32").to(DEVICE), targets: fromHost(targets, [2, CONFIG.seqLen], "int32").to(DEVICE) };
}

function build(beside: boolean, paramDtype: "bfloat16" | null, offload = true, keptToBackward: readonly string[] = []) {
  const model = new GPT(CONFIG, { seed: 5 });
  const engine = new ShardingEngine(
    model,
    { shard: new SoloGroup(0), replicate: null },
    { shardingStrategy: "FULL_SHARD", mixedPrecision: { paramDtype, reduceDtype: paramDtype && "float32" }, prefetch: 1, reshardAfterForward: true, offload, stepBesideBackward: beside },
    DEVICE,
  );
  const blocks = model.blocks.children().map((_, i) => `blocks.${i}`);
  for (const plan of planUnits(model, blocks)) {
    const params = plan.params.map((p) => ({ fqn: p.fqn, tensor: model.getParameter(p.fqn) }));
    // Units kept gathered from forward to backward (ZeRO's stage3_max_reuse_distance).
    engine.addUnit({ path: plan.path, params, options: keptToBackward.includes(plan.path) ? { reshardAfterForward: false } : undefined });
  }
  engine.ready();
  // Two groups, as a no-decay group for biases and norms makes: each parameter is checked against its own group's step.
  const params = engine.optimizerParams();
  const decay = params.filter((p) => p.numel > 4 * CONFIG.dModel);
  const optimizer = engine.onHost(() => new AdamW([{ params: decay }, { params: params.filter((p) => !decay.includes(p)), weightDecay: 0, lr: 0.02 }], { lr: 0.01 }));
  return { model, engine, optimizer };
}

type Built = ReturnType<typeof build>;

function backward({ model, engine }: Built, seed: number): number {
  return scope(() => {
    const { idx, targets } = batch(seed);
    const loss = model.loss(idx, targets);
    engine.runBackward(() => loss.backward());
    return loss.item();
  });
}

async function step({ engine, optimizer }: Built, clips = false): Promise<void> {
  engine.finishGradients();
  await engine.step(optimizer, async () => optimizer.step(), clips);
  engine.afterStep();
  // As the Trainer does: units kept on the device at one rank are resident, their gradients autograd's own.
  optimizer.zeroGrad();
}

/** Four steps (two micro-batches each with `accumulate`): the losses, every unit's master slice, units updated beside backward. */
async function train(beside: boolean, paramDtype: "bfloat16" | null, accumulate = false, offload = true, keptToBackward: readonly string[] = []) {
  const built = build(beside, paramDtype, offload, keptToBackward);
  built.engine.attachOptimizer(built.optimizer);
  const losses: number[] = [];
  for (let s = 0; s < 4; s++) {
    // The first micro-batch inside an accumulation window (a strategy's noBackwardSync).
    if (accumulate) losses.push(built.engine.withoutStep(() => backward(built, 100 + s)));
    losses.push(backward(built, 0));
    await step(built);
  }
  const masters = built.engine.units.map((u) => u.master.toArray());
  const stepped = built.engine.besideBackward?.unitsStepped ?? 0;
  built.engine.remove();
  return { losses, masters, stepped };
}

describe("offloaded units updated beside backward (stepBesideBackward)", () => {
  for (const paramDtype of [null, "bfloat16"] as const) {
    it(`${paramDtype ?? "fp32"} units: every block but the last reduced is updated on the worker thread during backward, to the same bits as the step after backward`, async () => {
      const threaded = cpuOptimizerThreadedSteps();
      const early = await train(true, paramDtype);
      // Three blocks: the first two reduced (blocks 2 and 1) land before backward ends; block 0 and the root unit go with the step.
      expect(early.stepped).toBe(4 * 2);
      // Each early update went to the worker thread (and the step's own share too).
      expect(cpuOptimizerThreadedSteps() - threaded).toBeGreaterThanOrEqual(4 * 2);
      const after = await train(false, paramDtype);
      expect(early.losses).toEqual(after.losses);
      expect(early.masters).toEqual(after.masters);
      expect(early.losses[3]).toBeLessThan(early.losses[0]);
    });
  }

  it("the step waits for every update started beside backward: with updates that land only when waited for, still the same bits", async () => {
    // The CPU backend's updates beside the caller, made to happen at wait() (work "under way" may
    // end at any time before it): a step that did not wait for one would leave that unit unstepped.
    const cpu = cpuBackend();
    let started = 0;
    let landed = 0;
    Object.defineProperty(cpu, "adamwBeside", {
      configurable: true,
      value: (...args: Parameters<NonNullable<Backend["adamwBeside"]>>): PendingWork => {
        started++;
        let done = false;
        const land = (): void => {
          if (done) return;
          done = true;
          landed++;
          cpu.adamw(...args);
        };
        return { poll: () => done, wait: land };
      },
    });
    try {
      const early = await train(true, null);
      // Two calls a unit: its parameters in the decay group and in the no-decay group.
      expect([early.stepped, started, landed]).toEqual([8, 16, 16]);
      const after = await train(false, null);
      expect(early.masters).toEqual(after.masters);
      expect(early.losses).toEqual(after.losses);
    } finally {
      delete (cpu as { adamwBeside?: unknown }).adamwBeside;
    }
  });

  // [Note: later micro-batches added beside backward] in flatUnit.ts: the second micro-batch's
  // gradients come down into scratch buffers and are added into the slices on the worker thread.
  it("with accumulation: the first micro-batch (inside withoutStep) updates nothing; after the last, units whose sums have landed are updated beside backward; the bits of units kept on the device", async () => {
    const early = await train(true, null, true);
    const after = await train(false, null, true);
    const onDevice = await train(false, null, true, false);
    expect(early.losses).toEqual(after.losses);
    expect(early.masters).toEqual(after.masters);
    // Resident units accumulate inside the weight-gradient product (another rounding): losses within
    // fp32 rounding (a sum dropped or added twice moves them by about 1e-2 here).
    after.losses.forEach((l, i) => expect(Math.abs(l - onDevice.losses[i]), `loss ${i}`).toBeLessThan(1e-5));
    // At most the two blocks reduced first each step (their sums are added on the worker thread, so how many have landed when backward ends varies).
    expect(early.stepped).toBeGreaterThan(0);
    expect(early.stepped).toBeLessThanOrEqual(4 * 2);
  });

  // What the 6.71B bench's "reuse" setting runs: bf16 units kept gathered from forward to backward
  // (no second upload), updated beside backward.
  it("bf16 units kept gathered from forward to backward, updated beside backward: the bits of the plain offloaded step", async () => {
    const kept = await train(true, "bfloat16", false, true, ["blocks.1", "blocks.2"]);
    const plain = await train(false, "bfloat16");
    expect(kept.losses).toEqual(plain.losses);
    expect(kept.masters).toEqual(plain.masters);
    expect(kept.stepped).toBe(4 * 2);
  });

  it("refuses an optimizer without the fused Adam update, naming why", () => {
    const built = build(true, null);
    const sgd = built.engine.onHost(() => new SGD(built.engine.optimizerParams(), { lr: 0.1 }));
    expect(() => built.engine.attachOptimizer(sgd)).toThrow(/offloadStepInBackward: the optimizer is SGD; it needs Adam or AdamW/);
    const amsgrad = built.engine.onHost(() => new AdamW(built.engine.optimizerParams(), { amsgrad: true }));
    expect(() => built.engine.attachOptimizer(amsgrad)).toThrow(/group 0 of AdamW does not take the fused update/);
    built.engine.remove();
  });

  const misuses: { what: string; between: (b: Built) => Promise<void> | void; error: RegExp }[] = [
    // Through a graph kept from before (a forward in between is refused first, below).
    { what: "a second backward before the step", between: (b) => b.engine.runBackward(() => void 0), error: /offloadStepInBackward: a second backward ran before the optimizer step/ },
    { what: "a forward before the step", between: (b) => void scope(() => b.model.loss(batch(9).idx, batch(9).targets).item()), error: /a forward ran between backward and the optimizer step.*unit "blocks\.\d"/ },
    {
      what: "a learning rate changed between backward and the step",
      between: async (b) => {
        b.optimizer.paramGroups[0].lr = 0.005;
        await step(b);
      },
      error: /unit "blocks\.[12]" was updated beside backward with lr 0\.01, .*but the optimizer step asks for lr 0\.005/,
    },
    { what: "a step that clips", between: (b) => step(b, true), error: /this optimizer step clips gradients, but units were already updated beside backward/ },
  ];
  for (const { what, between, error } of misuses) {
    it(`${what} is an error that names it, after the updates under way have ended`, async () => {
      const built = build(true, null);
      built.engine.attachOptimizer(built.optimizer);
      backward(built, 0);
      expect(built.engine.besideBackward!.pending).toBe(true);
      await expect(async () => between(built)).rejects.toThrow(error);
      // Nothing is left running on the threads, and the engine tears down.
      expect(built.engine.besideBackward!.pending).toBe(false);
      built.engine.remove();
    });
  }
});
