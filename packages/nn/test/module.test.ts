// Module: naming and order, state dicts (round trip, in-place loads, one error listing every
// mismatch), modes, hooks, gradients, dtype moves and parameter counts.
import { describe, expect, it } from "vitest";
import { noGrad, scope, tensor, zeros } from "@fulgur/tensor";
import type { Tensor } from "@fulgur/tensor";
import { GPT, GPT_CONFIGS, Linear, Module, ModuleList, gptParamCount, isParameter, parameter } from "../src/index";

class Pair extends Module {
  constructor() {
    super();
    this.registerParameter("scale", tensor([1, 2, 3]));
    this.registerBuffer("count", zeros([1]));
    this.registerBuffer("scratch", zeros([2]), { persistent: false });
    this.registerModule("a", new Linear(3, 2, { generator: undefined }));
    this.registerModule("list", new ModuleList([new Linear(2, 2), new Linear(2, 1, { bias: false })]));
  }
  forward(x: Tensor): Tensor {
    return x;
  }
}

describe("Module registration", () => {
  it("names parameters with dotted paths in registration order", () => {
    const m = new Pair();
    expect(m.namedParameters().map(([n]) => n)).toEqual([
      "scale",
      "a.weight",
      "a.bias",
      "list.0.weight",
      "list.0.bias",
      "list.1.weight",
    ]);
    expect(m.namedBuffers().map(([n]) => n)).toEqual(["count", "scratch"]);
    expect(m.namedModules().map(([n]) => n)).toEqual(["", "a", "list", "list.0", "list.1"]);
    expect(m.children().length).toBe(2);
    expect(m.namedParameters({ recurse: false }).map(([n]) => n)).toEqual(["scale"]);
    expect(m.namedParameters({ prefix: "model" })[1][0]).toBe("model.a.weight");
    expect(m.parameters().every((p) => isParameter(p) && p.requiresGrad && p.isLeaf)).toBe(true);
  });

  it("matches the anchor's PyTorch parameter names and order for GPT", () => {
    const names = new GPT("tiny", { seed: 0 }).namedParameters().map(([n]) => n);
    const block = (i: number) =>
      ["ln1", "ln2", "qkv", "proj", "fc1", "fc2"].flatMap((l) => [`blocks.${i}.${l}.weight`, `blocks.${i}.${l}.bias`]);
    expect(names).toEqual(["emb.weight", "pos.weight", ...block(0), ...block(1), "lnf.weight", "lnf.bias", "head.weight"]);
  });

  it("rejects duplicate and dotted names", () => {
    const m = new Pair();
    expect(() => m.registerParameter("scale", tensor([1]))).toThrow(/"scale" is already registered/);
    expect(() => m.registerModule("a", new Linear(1, 1))).toThrow(/already registered/);
    expect(() => m.registerParameter("x.y", tensor([1]))).toThrow(/without "\."/);
    expect(() => m.getParameter("a.nope")).toThrow(/no parameter "a.nope"/);
    expect(() => m.getSubmodule("list.7")).toThrow(/missing "7"/);
  });

  it("counts a shared parameter once and keeps parameters alive across scopes", () => {
    const shared = parameter(tensor([1, 2, 3, 4]));
    class Tied extends Module {
      constructor() {
        super();
        this.registerParameter("w", shared);
        this.registerModule("inner", new (class extends Module {
          constructor() {
            super();
            this.registerParameter("w", shared);
          }
          forward(): void {}
        })());
      }
      forward(): void {}
    }
    const m = scope(() => new Tied());
    expect(m.namedParameters().map(([n]) => n)).toEqual(["w"]);
    expect(m.numParameters()).toBe(4);
    expect(Object.keys(m.stateDict())).toEqual(["w"]);
    expect(shared.isDisposed).toBe(false);
  });

  it("lets a parameter be replaced by a view of a flat buffer", () => {
    const lin = new Linear(2, 2);
    const flat = zeros([6]);
    noGrad(() => flat.copy_(tensor([1, 2, 3, 4, 5, 6])));
    lin.setParameter("weight", flat.slice(0, 0, 4).view([2, 2]));
    lin.setParameter("bias", flat.slice(0, 4, 6));
    const y = lin.call(tensor([[1, 1]]));
    expect(y.toArray()).toEqual([1 + 2 + 5, 3 + 4 + 6]);
  });
});

describe("Module state dict", () => {
  it("round-trips: loading copies values into the existing tensors in place", () => {
    const a = new GPT("tiny", { seed: 1 });
    const b = new GPT("tiny", { seed: 2 });
    const before = b.parameters();
    expect(b.getParameter("blocks.0.qkv.weight").toArray()).not.toEqual(a.getParameter("blocks.0.qkv.weight").toArray());
    const result = b.loadStateDict(a.stateDict());
    expect(result).toEqual({ missingKeys: [], unexpectedKeys: [] });
    expect(b.parameters()).toEqual(before); // same tensor objects
    for (const [name, t] of Object.entries(a.stateDict())) expect(b.stateDict()[name].toArray()).toEqual(t.toArray());
  });

  it("writes through views into a flat buffer and casts to the parameter dtype", () => {
    const lin = new Linear(2, 2);
    const flat = zeros([6]);
    lin.setParameter("weight", flat.slice(0, 0, 4).view([2, 2]));
    lin.setParameter("bias", flat.slice(0, 4, 6));
    lin.loadStateDict({
      weight: tensor([[1, 2], [3, 4]], { dtype: "float64" }),
      bias: tensor([5, 6], { dtype: "bfloat16" }),
    });
    expect(flat.toArray()).toEqual([1, 2, 3, 4, 5, 6]);
    expect(lin.weight.dtype).toBe("float32");
  });

  it("lists missing, unexpected and mis-shaped keys in one error and copies nothing", () => {
    const lin = new Linear(3, 2);
    const w0 = lin.weight.toArray();
    let message = "";
    try {
      lin.loadStateDict({ weight: zeros([3, 2]), extra: zeros([1]) });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toContain("missing keys (1): bias");
    expect(message).toContain("unexpected keys (1): extra");
    expect(message).toContain("weight: expected shape [2, 3], got [3, 2]");
    expect(lin.weight.toArray()).toEqual(w0);
  });

  it("non-strict loading reports missing and unexpected keys but still rejects shapes", () => {
    const lin = new Linear(3, 2);
    const r = lin.loadStateDict({ weight: zeros([2, 3]), other: zeros([1]) }, { strict: false });
    expect(r).toEqual({ missingKeys: ["bias"], unexpectedKeys: ["other"] });
    expect(lin.weight.toArray()).toEqual([0, 0, 0, 0, 0, 0]);
    expect(() => lin.loadStateDict({ bias: zeros([3]) }, { strict: false })).toThrow(/bias: expected shape \[2\], got \[3\]/);
  });

  it("keeps non-persistent buffers out of the state dict", () => {
    expect(Object.keys(new Pair().stateDict())).toEqual([
      "scale",
      "count",
      "a.weight",
      "a.bias",
      "list.0.weight",
      "list.0.bias",
      "list.1.weight",
    ]);
  });
});

describe("Module modes, hooks and gradients", () => {
  it("propagates train and eval to every descendant", () => {
    const m = new GPT("tiny", { seed: 0 });
    m.eval();
    expect(m.modules().every((x) => !x.training)).toBe(true);
    m.train();
    expect(m.modules().every((x) => x.training)).toBe(true);
    m.blocks.get(1).train(false);
    expect(m.blocks.get(1).modules().every((x) => !x.training)).toBe(true);
    expect(m.blocks.get(0).training).toBe(true);
  });

  it("runs forward pre-hooks and forward hooks, which can replace inputs and outputs, until removed", () => {
    const lin = new Linear(2, 1, { bias: false });
    noGrad(() => lin.weight.copy_(tensor([[1, 1]])));
    const seen: string[] = [];
    const pre = lin.registerForwardPreHook((_m, args) => {
      seen.push("pre");
      return [(args[0] as Tensor).mul(2)];
    });
    const post = lin.registerForwardHook((_m, _args, out) => {
      seen.push("post");
      return (out as Tensor).add(1);
    });
    expect(lin.call(tensor([[1, 2]])).item()).toBe(7);
    expect(seen).toEqual(["pre", "post"]);
    pre.remove();
    post.remove();
    post.remove(); // idempotent
    expect(lin.call(tensor([[1, 2]])).item()).toBe(3);
    expect(seen).toEqual(["pre", "post"]);
  });

  it("fires backward pre-hooks once per call with the output gradient, before parameters get theirs", () => {
    const lin = new Linear(2, 3);
    const events: string[] = [];
    lin.registerBackwardPreHook((_m, g) => {
      events.push(`pre ${g.shape.join("x")} weightGrad=${lin.weight.grad !== null}`);
    });
    const y = lin.call(tensor([[1, 2], [3, 4]]));
    y.sum().backward();
    expect(events).toEqual(["pre 2x3 weightGrad=false"]);
    expect(lin.weight.grad).not.toBeNull();
  });

  it("zeroGrad drops gradients or zeroes them in place", () => {
    const lin = new Linear(2, 2);
    lin.call(tensor([[1, 2]])).sum().backward();
    const g = lin.weight.grad!;
    lin.zeroGrad(false);
    expect(lin.weight.grad).toBe(g);
    expect(g.toArray()).toEqual([0, 0, 0, 0]);
    lin.zeroGrad();
    expect(lin.weight.grad).toBeNull();
    expect(g.isDisposed).toBe(true);
  });

  it("to(dtype) casts every parameter, keeps ties and frees the old tensors", () => {
    const m = new Pair();
    const old = m.getParameter("a.weight");
    const values = old.toArray();
    m.to("float64");
    expect(m.parameters().every((p) => p.dtype === "float64" && p.requiresGrad && isParameter(p))).toBe(true);
    expect(m.getParameter("a.weight").toArray()).toEqual(values);
    expect(old.isDisposed).toBe(true);
    expect(m.getBuffer("count").dtype).toBe("float64");
  });

  it("apply visits children before parents", () => {
    const order: string[] = [];
    new Pair().apply((mod) => order.push(mod.constructor.name));
    expect(order).toEqual(["Linear", "Linear", "Linear", "ModuleList", "Pair"]);
  });
});

describe("parameter counts", () => {
  it("match the anchor's formula for the three named configurations", () => {
    expect(new GPT("tiny", { seed: 0 }).numParameters()).toBe(gptParamCount("tiny"));
    expect(new GPT("small", { seed: 0 }).numParameters()).toBe(gptParamCount(GPT_CONFIGS.small));
    expect(gptParamCount("tiny")).toBe(136_960);
    expect(gptParamCount("small")).toBe(875_264);
    expect(gptParamCount("1b")).toBe(938_905_600);
  });

  it("rejects bad configurations naming the field", () => {
    expect(() => gptParamCount({ ...GPT_CONFIGS.tiny, nHeads: 5 })).toThrow(/dModel \(64\) must be divisible by nHeads \(5\)/);
    expect(() => gptParamCount({ ...GPT_CONFIGS.tiny, dModel: 0 })).toThrow(/dModel must be a positive integer; got 0/);
    expect(() => new GPT("huge" as never)).toThrow(/unknown configuration "huge"; allowed: tiny, small, 1b/);
  });
});

describe("Module.call frees what forward made and did not return", () => {
  it("intermediates are released when the call returns; saved tensors stay for backward", async () => {
    const T = await import("@fulgur/tensor");
    class Chain extends Module {
      forward(x: InstanceType<typeof T.Tensor>) {
        const a = x.mul(2);
        const b = a.add(1);
        const c = b.tanh(); // tanh saves its output for backward
        return c.mul(3);
      }
    }
    const m = new Chain();
    const x = T.ones([1024]);
    const before = T.memoryStats("cpu").liveBytes;
    const y = T.noGrad(() => m.call(x));
    // Only the output is left without autograd.
    expect(T.memoryStats("cpu").liveBytes - before).toBe(4096);
    y.dispose();
    const xg = T.ones([1024], { requiresGrad: true });
    const before2 = T.memoryStats("cpu").liveBytes;
    const z = m.call(xg);
    // The output and tanh's saved output (mul by a scalar saves nothing).
    expect(T.memoryStats("cpu").liveBytes - before2).toBe(2 * 4096);
    z.sum().backward();
    expect(xg.grad!.toArray()[0]).toBeCloseTo(6 * (1 - Math.tanh(3) ** 2), 5);
  });
});
