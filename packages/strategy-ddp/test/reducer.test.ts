/**
 * Gradient buckets and the reducer, in process, against a recording fake group: bucket layout by
 * size, gradients as views into one flat buffer, an all-reduce launched as soon as a bucket is
 * ready (while backward still runs), nothing reduced under noBackwardSync, the unused-parameter
 * error, and zeroGrad keeping the views.
 */
import { describe, expect, it } from "vitest";
import { type Tensor, checkpoint, noGrad, randn, scope } from "@fulgur/tensor";
import { assignBuckets } from "../src/bucket";
import { Reducer, UnusedParametersError, countParameterUses } from "../src/reducer";
import { RecordingGroup, ThreeLayers, grads } from "./helpers";

const MB = 2 ** 20;

function setup(options: Partial<{ cap: number; findUnused: boolean; asView: boolean; staticGraph: boolean; transform: (x: number[]) => number[] }> = {}) {
  const model = new ThreeLayers();
  const group = new RecordingGroup(0, 2, options.transform);
  const reducer = new Reducer(group, model.namedParameters(), {
    bucketCapBytes: options.cap ?? 300,
    findUnusedParameters: options.findUnused ?? false,
    staticGraph: options.staticGraph ?? false,
    gradientAsBucketView: options.asView ?? true,
  });
  return { model, group, reducer };
}

const input = () => randn([4, 8], { seed: 7 });

/** Runs forward and backward the way DDPStrategy.backward does. */
function step(model: ThreeLayers, reducer: Reducer, use: readonly number[] = [0, 1, 2]): void {
  scope(() => {
    const loss = model.forward(input(), use).square().sum();
    reducer.prepareForBackward(loss);
    loss.backward();
  });
}

/** The same gradients computed with no reducer at all (a fresh copy of the model). */
function referenceGrads(use: readonly number[] = [0, 1, 2], times = 1): number[][] {
  const model = new ThreeLayers();
  for (let i = 0; i < times; i++) scope(() => model.forward(input(), use).square().sum().backward());
  return grads(model.parameters());
}

describe("assignBuckets", () => {
  it("fills buckets in reverse parameter order up to the cap, one dtype per bucket", () => {
    const f32 = (numel: number) => ({ numel, dtype: "float32" as const, device: "cpu" });
    // 6 parameters of 64, 8, 64, 8, 64, 8 floats: reverse order is 5,4 | 3,2 | 1,0 with a 300-byte cap.
    expect(assignBuckets([f32(64), f32(8), f32(64), f32(8), f32(64), f32(8)], 300)).toEqual([[5, 4], [3, 2], [1, 0]]);
    expect(assignBuckets([f32(64), f32(8), f32(64), f32(8), f32(64), f32(8)], 25 * MB)).toEqual([[5, 4, 3, 2, 1, 0]]);
    // A parameter bigger than the cap gets a bucket of its own.
    expect(assignBuckets([f32(10), f32(1000), f32(10)], 100)).toEqual([[2], [1], [0]]);
    // bf16 and float32 never share a buffer.
    const mixed = [f32(4), { numel: 4, dtype: "bfloat16" as const, device: "cpu" }, f32(4)];
    expect(assignBuckets(mixed, MB)).toEqual([[2, 0], [1]]);
    expect(() => assignBuckets([f32(1)], 0)).toThrow(/capBytes must be > 0/);
  });
});

describe("Reducer", () => {
  it("builds buckets by size and makes every gradient a view into its bucket's flat buffer", () => {
    const { model, reducer } = setup();
    expect(reducer.buckets.map((b) => b.slots.map((s) => s.name))).toEqual([
      ["l2.bias", "l2.weight"],
      ["l1.bias", "l1.weight"],
      ["l0.bias", "l0.weight"],
    ]);
    for (const b of reducer.buckets) {
      expect(b.numel).toBe(72);
      for (const s of b.slots) {
        const g = s.param.grad!;
        expect(g.storage).toBe(b.buffer.storage);
        expect(g.offset).toBe(s.offset);
        expect(g.shape).toEqual(s.param.shape);
      }
    }
    step(model, reducer);
    // Backward accumulated straight into the buffers: each buffer is its parameters' gradients back to back.
    const want = referenceGrads();
    const names = model.namedParameters().map(([n]) => n);
    for (const b of reducer.buckets) {
      const flat = b.buffer.toArray();
      for (const s of b.slots) {
        const g = want[names.indexOf(s.name)];
        expect(flat.slice(s.offset, s.offset + s.numel)).toEqual(g);
      }
    }
  });

  it("launches each bucket's all-reduce (avg) as soon as its gradients are final, during backward, in bucket order", async () => {
    const { model, group, reducer } = setup();
    // Hooks registered after the reducer's fire after it: they show what backward did after each launch.
    for (const [name, p] of model.namedParameters()) p.registerPostAccumulateGradHook(() => group.events.push(name));
    step(model, reducer);
    expect(group.calls.map((c) => [c.op, c.reduceOp])).toEqual([
      ["allReduce", "avg"],
      ["allReduce", "avg"],
      ["allReduce", "avg"],
    ]);
    expect(group.calls.map((c) => reducer.buckets.findIndex((b) => b.buffer === c.tensor))).toEqual([0, 1, 2]);
    // Bucket 0 (layer 2) left before layer 1's gradients were even computed.
    const ev = group.events;
    expect(ev.indexOf("allReduce#0")).toBeLessThan(ev.indexOf("l1.weight"));
    expect(ev.indexOf("allReduce#1")).toBeLessThan(ev.indexOf("l0.weight"));
    // ...and not before layer 2's first gradient (the last one's own hook launches it: it runs first).
    expect(ev.indexOf("allReduce#0")).toBeGreaterThan(Math.min(ev.indexOf("l2.weight"), ev.indexOf("l2.bias")));
    await reducer.finish();
    expect(group.calls).toHaveLength(3);
  });

  it("writes the reduced values into the gradients (views) when the step waits for the works", async () => {
    // Simulates a peer whose gradients are 3x ours: the average is 2x ours.
    const { model, reducer } = setup({ transform: (x) => x.map((v) => v * 2) });
    step(model, reducer);
    await reducer.finish();
    const want = referenceGrads().map((g) => g.map((v) => v * 2));
    grads(model.parameters()).forEach((g, i) => g.forEach((v, j) => expect(v).toBeCloseTo(want[i][j], 5)));
  });

  it("without gradientAsBucketView packs gradients into the buffer and unpacks the reduced values", async () => {
    const { model, group, reducer } = setup({ asView: false, transform: (x) => x.map((v) => v * 2) });
    const p0 = model.parameters()[0];
    step(model, reducer);
    expect(p0.grad!.storage).not.toBe(reducer.buckets[2].buffer.storage);
    expect(group.calls).toHaveLength(3);
    await reducer.finish();
    const want = referenceGrads().map((g) => g.map((v) => v * 2));
    grads(model.parameters()).forEach((g, i) => g.forEach((v, j) => expect(v).toBeCloseTo(want[i][j], 5)));
  });

  it("reduces nothing under noSync and sums the accumulated gradients in the next synchronising backward", async () => {
    const { model, group, reducer } = setup();
    reducer.noSync = true;
    step(model, reducer);
    expect(group.calls).toHaveLength(0);
    reducer.noSync = false;
    step(model, reducer);
    expect(group.calls).toHaveLength(3);
    // What was sent is the sum of both backward passes.
    const want = referenceGrads([0, 1, 2], 2);
    const names = model.namedParameters().map(([n]) => n);
    const sent = group.calls[0].sent;
    const slot = reducer.buckets[0].slots[1];
    want[names.indexOf(slot.name)].forEach((v, j) => expect(sent[slot.offset + j]).toBeCloseTo(v, 5));
    await reducer.finish();
  });

  it("names the parameters that got no gradient, unless findUnusedParameters", async () => {
    const { model, group, reducer } = setup();
    step(model, reducer, [0, 1]);
    // Layer 2's bucket can never be ready; the buckets after it wait behind it (bucket order).
    expect(group.calls).toHaveLength(0);
    const err = await reducer.finish().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(UnusedParametersError);
    expect((err as UnusedParametersError).parameters).toEqual(["l2.bias", "l2.weight"]);
    expect((err as Error).message).toMatch(/2 parameter\(s\) got no gradient in this step: l2\.bias, l2\.weight.*findUnusedParameters: true/);

    const found = setup({ findUnused: true });
    step(found.model, found.reducer, [0, 1]);
    // The unused bucket is ready before backward starts, so every bucket leaves during backward.
    expect(found.group.calls).toHaveLength(3);
    expect(found.group.calls[0].sent.every((v) => v === 0)).toBe(true);
    await found.reducer.finish();
  });

  it("counts a parameter used twice and reduces its bucket only after both accumulations", async () => {
    const { model, group, reducer } = setup({ cap: 25 * MB });
    step(model, reducer, [0, 0, 1, 2]);
    expect(group.calls).toHaveLength(1);
    const want = referenceGrads([0, 0, 1, 2]);
    const names = model.namedParameters().map(([n]) => n);
    const slot = reducer.buckets[0].slots.find((s) => s.name === "l0.weight")!;
    want[names.indexOf("l0.weight")].forEach((v, j) => expect(group.calls[0].sent[slot.offset + j]).toBeCloseTo(v, 5));
    await reducer.finish();
  });

  it("with activation checkpointing reduces after backward and still gets every gradient", async () => {
    const { model, group, reducer } = setup();
    const run = (m: ThreeLayers) =>
      scope(() => {
        const h = m.layer(0).call(input()).tanh();
        const mid = checkpoint((x: Tensor) => m.layer(1).call(x).tanh(), h);
        const loss = m.layer(2).call(mid).tanh().square().sum();
        if (m === model) reducer.prepareForBackward(loss);
        loss.backward();
      });
    const use = countParameterUses(scope(() => model.forward(input()).sum().keep()), new Set(model.parameters()));
    expect(use.opaque).toBe(false);
    run(model);
    expect(group.calls).toHaveLength(0);
    await reducer.finish();
    expect(group.calls).toHaveLength(3);
    const ref = new ThreeLayers();
    run(ref);
    grads(model.parameters()).forEach((g, i) => g.forEach((v, j) => expect(v).toBeCloseTo(grads(ref.parameters())[i][j], 5)));
  });

  it("zeroGrad zeroes the buckets in place and keeps the views; a dropped gradient is re-attached", async () => {
    const { model, reducer } = setup();
    step(model, reducer);
    await reducer.finish();
    const p = model.parameters()[0];
    const view = p.grad!;
    reducer.zeroGrad();
    expect(p.grad).toBe(view);
    expect(reducer.buckets.every((b) => b.buffer.toArray().every((v) => v === 0))).toBe(true);
    // Code that drops a gradient (a plain zeroGrad(true)) does not break the bucket.
    const g = p.grad!;
    p.grad = null;
    g.dispose();
    step(model, reducer);
    expect(p.grad!.storage).toBe(reducer.buckets[2].buffer.storage);
    await reducer.finish();
    expect(p.grad!.toArray()).toEqual(referenceGrads()[0]);
  });

  it("refuses a second synchronising backward before the step", () => {
    const { model, reducer } = setup();
    step(model, reducer);
    expect(() => step(model, reducer)).toThrow(/second backward with gradient synchronisation ran before the optimizer step/);
  });

  it("staticGraph reuses the first step's parameter counts", async () => {
    const { model, group, reducer } = setup({ staticGraph: true });
    step(model, reducer);
    await reducer.finish();
    reducer.zeroGrad();
    step(model, reducer);
    expect(group.calls).toHaveLength(6);
    await reducer.finish();
    expect(grads(model.parameters())).toEqual(referenceGrads());
  });

  it("remove() unhooks the parameters and leaves them standalone gradients", async () => {
    const { model, group, reducer } = setup();
    step(model, reducer);
    await reducer.finish();
    const before = grads(model.parameters());
    reducer.remove();
    expect(grads(model.parameters())).toEqual(before);
    noGrad(() => model.parameters().forEach((p) => p.grad?.zero_()));
    scope(() => model.forward(input()).square().sum().backward());
    expect(group.calls).toHaveLength(3);
  });
});
