// The meta device: shapes and dtypes without data, clear errors where data is needed, and
// materialisation that replays recorded writes into the values eager execution gives, bit for bit.
import { describe, expect, it } from "vitest";
import * as T from "../src";
import { conformanceCases } from "../src/testing";

const bits = (t: T.Tensor): number[] => Array.from(T.cast(t, "float64").toArray());

describe("meta tensors", () => {
  it("have shapes, dtypes and strides from every op, and no bytes", () => {
    const before = T.memoryStats("meta");
    T.scope(() => {
      const x = T.randn([4, 8, 16], { device: "meta" });
      const w = T.zeros([32, 16], { device: "meta", dtype: "bfloat16" });
      const y = T.autocast("bfloat16", () => T.linear(x, T.cast(w, "float32")));
      expect([y.shape, y.dtype, y.device]).toEqual([[4, 8, 32], "bfloat16", "meta"]);
      const s = T.softmax(T.layerNorm(y, 32), -1).sum(1);
      expect([s.shape, s.dtype]).toEqual([[4, 32], "bfloat16"]);
      expect(x.transpose(0, 2).strides).toEqual([1, 16, 128]);
      expect(T.memoryStats("meta").liveBytes).toBe(0);
      expect(T.memoryStats("meta").liveTensors).toBeGreaterThan(before.liveTensors);
      expect(String(T.ones([2], { device: "meta" }))).toBe("Tensor([2], float32, meta)");
    });
    expect(T.memoryStats("meta")).toMatchObject({ liveBytes: 0, peakBytes: 0, liveTensors: before.liveTensors });
  });

  it("is the device of every factory inside withDevice('meta'); 'meta:0' is 'meta'", () => {
    const t = T.withDevice("meta", () => T.ones([3]));
    expect(t.device).toBe("meta");
    expect(T.normalizeDevice("meta:0")).toBe("meta");
    expect(T.getBackend("meta").name).toBe("meta");
    t.dispose();
  });

  it("runs backward, giving meta gradients of the right shapes", () => {
    const w = T.randn([5, 3], { device: "meta", requiresGrad: true }).untrack();
    T.scope(() => T.matmul(T.ones([2, 5], { device: "meta" }), w).tanh().sum().backward());
    expect([w.grad!.shape, w.grad!.device]).toEqual([[5, 3], "meta"]);
    w.grad!.dispose();
    w.dispose();
  });

  it("refuses to be read, naming what to do", () => {
    const m = T.ones([1], { device: "meta" });
    for (const read of [() => m.item(), () => m.toArray(), () => m.toHost(), () => m.to("cpu"), () => T.zeros([1]).copy_(m)]) {
      expect(read).toThrow(/meta tensors have no data; materialise the module first/);
    }
    m.dispose();
  });

  it("fails clearly in operations with real tensors, either way round", () => {
    const m = T.ones([2], { device: "meta" });
    const c = T.ones([2]);
    expect(() => T.add(m, c)).toThrow(/got meta and cpu: meta tensors have no data and cannot meet real ones; materialise/);
    expect(() => T.matmul(c.reshape(1, 2), m.reshape(2, 1))).toThrow(/cannot meet real ones/);
    // Below the frontend's device checks, the meta backend refuses a real storage too.
    expect(() => T.getBackend("meta").copy(c, m)).toThrow(/got a cpu tensor among meta tensors/);
    m.dispose();
    c.dispose();
  });
});

describe("materialize", () => {
  /** Five draws and writes in a row from one generator; on meta, materialised in the order given. */
  function build(device: string, seed: number): T.Tensor[] {
    const g = new T.Generator(seed);
    return T.noGrad(() => {
      const a = T.rand([7, 5], { device, generator: g }).mul(2).add(-1);
      const b = T.randn([64], { device, generator: g, dtype: "bfloat16" });
      const c = T.full([3, 3], 0.25, { device });
      c.add_(T.randn([3, 3], { device, generator: g }), 0.5);
      const d = T.empty([4, 6], { device });
      d.slice(1, 2, 5).copy_(T.rand([4, 3], { device, generator: g }));
      d.mul_(3);
      const e = T.tensor([[1, 2], [3, 4]], { device }).matmul(T.randn([2, 2], { device, generator: g }));
      return [a, b, c, d, e];
    });
  }

  it("replays recorded writes into exactly the eager values, in any order", () => {
    const eager = build("cpu", 11);
    const meta = build("meta", 11);
    const order = [4, 2, 0, 3, 1];
    for (const i of order) {
      const t = meta[i];
      expect(T.materialize(t, "cpu")).toBe(t);
      expect(t.device).toBe("cpu");
      expect(t.dtype).toBe(eager[i].dtype);
      expect(bits(t)).toEqual(bits(eager[i]));
    }
    for (const t of [...eager, ...meta]) t.dispose();
  });

  it("keeps the tensor object, its autograd flags and its layout; shared storages stay shared", () => {
    const cpuBefore = T.memoryStats("cpu").liveBytes;
    const flat = T.withDevice("meta", () => T.arange(0, 12, 1, { dtype: "float32" }));
    const a = T.noGrad(() => flat.narrow(0, 0, 6).view([2, 3])).requiresGrad_();
    const b = T.noGrad(() => flat.narrow(0, 6, 6).view([3, 2]).t());
    T.materialize([a, b], "cpu");
    expect(a.requiresGrad && a.isLeaf).toBe(true);
    expect([b.shape, b.strides, b.offset]).toEqual([[2, 3], [1, 2], 6]);
    expect(a.storage).toBe(b.storage);
    expect(b.toArray()).toEqual([6, 8, 10, 7, 9, 11]);
    expect(flat.device).toBe("meta"); // not given, not moved
    expect(T.memoryStats("cpu").liveBytes - cpuBefore).toBe(12 * 4);
    T.materialize(flat, "cpu");
    expect(flat.storage).not.toBe(a.storage); // materialised apart: its own memory
    for (const t of [flat, a, b]) t.dispose();
    expect(T.memoryStats("cpu").liveBytes).toBe(cpuBefore);
  });

  it("frees the initialiser's temporaries as it goes: peak is the result plus two of them", () => {
    const w = T.withDevice("meta", () => T.noGrad(() => T.empty([256, 256]).copy_(T.rand([256, 256]).mul(0.1).add(-0.05))));
    const before = T.memoryStats("cpu").liveBytes;
    T.resetPeakMemory("cpu");
    T.materialize(w, "cpu");
    const bytes = 256 * 256 * 4;
    expect(T.memoryStats("cpu").liveBytes - before).toBe(bytes);
    expect(T.memoryStats("cpu").peakBytes - before).toBeLessThanOrEqual(2 * bytes);
    w.dispose();
  });

  it("recordInit runs host-side initialisation at its place among the writes", () => {
    const make = (device: string): T.Tensor =>
      T.noGrad(() => {
        const t = T.zeros([6], { device });
        const u = T.rand([6], { device, seed: 3 });
        const init = (dst: T.Tensor, [src]: readonly T.Tensor[]): void => {
          dst.copy_(T.tensor(src.toArray().map((v) => Math.round(v * 10)), { device: dst.device }));
        };
        if (device === "meta") T.recordInit(t, [u], init);
        else init(t, [u]);
        u.mul_(0); // written after it was read: the replay must read it as it was
        return t.add_(1);
      });
    const eager = make("cpu");
    expect(T.materialize(make("meta"), "cpu").toArray()).toEqual(eager.toArray());
    expect(() => T.recordInit(eager, [], () => {})).toThrow(/expects meta tensors/);
  });

  it("refuses meta as the target device", () => {
    expect(() => T.materialize(T.ones([1], { device: "meta" }), "meta")).toThrow(/must hold data/);
  });
});

describe("every conformance op on meta, materialised, equals the CPU bit for bit", () => {
  for (const c of conformanceCases()) {
    it(c.name, () => {
      const run = (device: string): T.Tensor[] =>
        T.scope(() => {
          const gen = new T.Generator(7);
          const ins = c.inputs.map((spec) => {
            const k = spec.kind;
            const t =
              typeof k === "object"
                ? T.to(T.randint(k.low, k.high, spec.shape, { generator: gen }), device)
                : T.randn(spec.shape, { generator: gen, device });
            const leaf = k === "positive" ? T.noGrad(() => T.add(T.abs(t), 0.2)) : t;
            return spec.grad ? leaf.requiresGrad_() : leaf;
          });
          const y = c.autocast ? T.autocast("bfloat16", () => c.fn(...ins)) : c.fn(...ins);
          T.sum(T.mul(y, T.randn(y.shape, { seed: 8, device, dtype: y.dtype }))).backward();
          return [y, ...ins.filter((t) => t.grad).map((t) => t.grad!)].map((t) => t.keep());
        });
      const ref = run("cpu");
      const meta = run("meta");
      expect(meta.map((t) => [t.shape, t.dtype])).toEqual(ref.map((t) => [t.shape, t.dtype]));
      T.materialize(meta, "cpu");
      meta.forEach((t, i) => expect(bits(t), `output ${i}`).toEqual(bits(ref[i])));
    });
  }
});
