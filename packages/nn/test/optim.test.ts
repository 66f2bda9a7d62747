// Optimizers against scalar loops written from PyTorch's formulas (torch/optim/sgd.py and adam.py,
// single-tensor path), on a fixed quadratic problem over several steps, plus state dict layout,
// save/flatten/JSON/load continuing identically, and validation errors.
import { describe, expect, it } from "vitest";
import { routeAdamW, scope, tensor } from "@fulgur/tensor";
import type { DType, FusedAdamWCall, Tensor } from "@fulgur/tensor";
import { Adam, AdamW, SGD, flattenOptimizerState, parameter, unflattenOptimizerState } from "../src/index";
import type { Optimizer } from "../src/index";

// Loss = sum_i w_i (p_i - t_i)^2 over two parameters, so grad = 2 w (p - t).
const INIT = [
  [0.5, -1.2, 2.0, 0.3, -0.7, 1.1],
  [0.25, -0.5, 1.5, -2.0],
];
const TARGET = [
  [1.0, 0.5, -1.0, 0.0, 0.2, 3.0],
  [-1.0, 0.75, 0.5, 1.0],
];
const WEIGHT = [
  [1.0, 2.0, 0.5, 3.0, 1.5, 0.25],
  [0.8, 1.2, 2.5, 0.1],
];
const SHAPES = [[2, 3], [4]];

function makeParams(dtype: DType, values = INIT): Tensor[] {
  return values.map((v, i) => parameter(tensor(v, { dtype, shape: SHAPES[i] })));
}

function lossStep(params: Tensor[], opt: Optimizer): void {
  opt.zeroGrad();
  scope(() =>
    params
      .map((p, i) => {
        const t = tensor(TARGET[i], { dtype: p.dtype, shape: SHAPES[i] });
        const w = tensor(WEIGHT[i], { dtype: p.dtype, shape: SHAPES[i] });
        return p.sub(t).square().mul(w).sum();
      })
      .reduce((a, b) => a.add(b))
      .backward(),
  );
  opt.step();
}

const grads = (p: number[][]): number[][] => p.map((row, i) => row.map((x, j) => 2 * WEIGHT[i][j] * (x - TARGET[i][j])));

interface SgdHyper {
  lr: number;
  momentum?: number;
  dampening?: number;
  nesterov?: boolean;
  weightDecay?: number;
  maximize?: boolean;
}

function sgdReference(h: SgdHyper, steps: number): number[][] {
  const p = INIT.map((r) => [...r]);
  const buf: (number[] | null)[] = [null, null];
  const { lr, momentum = 0, dampening = 0, nesterov = false, weightDecay = 0, maximize = false } = h;
  for (let s = 0; s < steps; s++) {
    const g = grads(p);
    for (let i = 0; i < p.length; i++) {
      let d = g[i].map((x) => (maximize ? -x : x));
      if (weightDecay !== 0) d = d.map((x, j) => x + weightDecay * p[i][j]);
      if (momentum !== 0) {
        const b = buf[i] === null ? [...d] : (buf[i] as number[]).map((x, j) => momentum * x + (1 - dampening) * d[j]);
        buf[i] = b;
        d = nesterov ? d.map((x, j) => x + momentum * b[j]) : b;
      }
      p[i] = p[i].map((x, j) => x - lr * d[j]);
    }
  }
  return p;
}

interface AdamHyper {
  lr: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
  amsgrad?: boolean;
  maximize?: boolean;
}

function adamReference(h: AdamHyper, decoupled: boolean, steps: number): number[][] {
  const p = INIT.map((r) => [...r]);
  const m = INIT.map((r) => r.map(() => 0));
  const v = INIT.map((r) => r.map(() => 0));
  const vmax = INIT.map((r) => r.map(() => 0));
  const { lr, betas = [0.9, 0.999], eps = 1e-8, weightDecay = 0, amsgrad = false, maximize = false } = h;
  const [b1, b2] = betas;
  for (let t = 1; t <= steps; t++) {
    const g = grads(p);
    for (let i = 0; i < p.length; i++) {
      for (let j = 0; j < p[i].length; j++) {
        let gi = maximize ? -g[i][j] : g[i][j];
        if (weightDecay !== 0) {
          if (decoupled) p[i][j] *= 1 - lr * weightDecay;
          else gi += weightDecay * p[i][j];
        }
        m[i][j] = b1 * m[i][j] + (1 - b1) * gi;
        v[i][j] = b2 * v[i][j] + (1 - b2) * gi * gi;
        const bc1 = 1 - b1 ** t;
        const bc2 = 1 - b2 ** t;
        vmax[i][j] = Math.max(vmax[i][j], v[i][j]);
        const denom = Math.sqrt(amsgrad ? vmax[i][j] : v[i][j]) / Math.sqrt(bc2) + eps;
        p[i][j] -= (lr / bc1) * (m[i][j] / denom);
      }
    }
  }
  return p;
}

function expectClose(got: Tensor[], want: number[][], tol: number, label: string): void {
  got.forEach((p, i) => {
    const a = p.toArray();
    a.forEach((x, j) => {
      expect(Math.abs(x - want[i][j]), `${label} p${i}[${j}]: ${x} vs ${want[i][j]}`).toBeLessThan(tol * (1 + Math.abs(want[i][j])));
    });
  });
}

const STEPS = 6;

describe("SGD", () => {
  const cases: SgdHyper[] = [
    { lr: 0.05 },
    { lr: 0.05, momentum: 0.9 },
    { lr: 0.02, momentum: 0.8, dampening: 0.3, weightDecay: 0.01 },
    { lr: 0.03, momentum: 0.9, nesterov: true, weightDecay: 0.05 },
    { lr: 0.01, momentum: 0.5, maximize: true },
  ];
  for (const h of cases) {
    for (const dtype of ["float64", "float32"] as const) {
      it(`${JSON.stringify(h)} ${dtype}`, () => {
        const params = makeParams(dtype);
        const opt = new SGD(params, h);
        for (let s = 0; s < STEPS; s++) lossStep(params, opt);
        expectClose(params, sgdReference(h, STEPS), dtype === "float64" ? 1e-12 : 2e-6, "SGD");
      });
    }
  }

  it("rejects Nesterov without momentum and bad values, naming the field", () => {
    const params = makeParams("float32");
    expect(() => new SGD(params, { nesterov: true })).toThrow(/nesterov needs momentum > 0 and dampening 0/);
    expect(() => new SGD(params, { lr: -1 })).toThrow(/lr \(group 0\) must be a finite number >= 0; got -1/);
    expect(() => new SGD(params, { momentum: Number.NaN })).toThrow(/momentum must be/);
    expect(() => new SGD([])).toThrow(/empty parameter list/);
  });
});

describe("Adam and AdamW", () => {
  const cases: Array<[string, AdamHyper & { fused?: boolean }, boolean]> = [
    ["Adam", { lr: 0.1 }, false],
    ["Adam", { lr: 0.05, betas: [0.8, 0.99], weightDecay: 0.1, amsgrad: true, fused: false }, false],
    ["Adam", { lr: 0.05, weightDecay: 0.1 }, false],
    ["AdamW", { lr: 0.1, weightDecay: 0.1 }, true],
    ["AdamW", { lr: 0.1, weightDecay: 0.1, fused: false }, true],
    ["AdamW", { lr: 0.02, eps: 1e-3, weightDecay: 0.3, amsgrad: true, maximize: true }, true],
  ];
  for (const [name, h, decoupled] of cases) {
    for (const dtype of ["float64", "float32"] as const) {
      it(`${name} ${JSON.stringify(h)} ${dtype}`, () => {
        const params = makeParams(dtype);
        const opt = name === "Adam" ? new Adam(params, h) : new AdamW(params, h);
        for (let s = 0; s < STEPS; s++) lossStep(params, opt);
        expectClose(params, adamReference(h, decoupled, STEPS), dtype === "float64" ? 1e-12 : 1e-5, name);
        const st = opt.state.get(params[0])!;
        expect(st.step).toBe(STEPS);
        expect((st.exp_avg as Tensor).dtype).toBe(dtype);
        expect("max_exp_avg_sq" in st).toBe(h.amsgrad === true);
      });
    }
  }

  it("AdamW defaults to weight decay 0.01, Adam to 0", () => {
    expect(new AdamW(makeParams("float32")).paramGroups[0].weightDecay).toBe(0.01);
    expect(new Adam(makeParams("float32")).paramGroups[0].weightDecay).toBe(0);
  });

  it("keeps float32 state for bfloat16 parameters and tracks the float32 trajectory", () => {
    const params = makeParams("bfloat16");
    const opt = new AdamW(params, { lr: 0.1, weightDecay: 0.1 });
    for (let s = 0; s < 3; s++) lossStep(params, opt);
    expect((opt.state.get(params[1])!.exp_avg_sq as Tensor).dtype).toBe("float32");
    expect(params[1].dtype).toBe("bfloat16");
    // bf16 keeps 8 bits of mantissa: agree to a few parts in a thousand of the weight.
    expectClose(params, adamReference({ lr: 0.1, weightDecay: 0.1 }, true, 3), 2e-2, "bf16");
  });

  // The sharding engine runs a unit's update beside backward from these calls, and matches the step's own against them.
  it("nextFusedCalls gives the fused calls the next step makes (per group), without moving the step counts", () => {
    const params = makeParams("float32");
    const opt = new AdamW([{ params: [params[0]] }, { params: [params[1]], lr: 0.05, weightDecay: 0 }], { lr: 0.1 });
    lossStep(params, opt);
    lossStep(params, opt);
    scope(() => params.map((p, i) => p.sub(tensor(TARGET[i], { shape: SHAPES[i] })).square().sum()).reduce((a, b) => a.add(b)).backward());
    const ahead = opt.nextFusedCalls([params[1], params[0]])!;
    expect(ahead.map((c) => [c.params, c.hyper])).toEqual([
      [[params[1]], { lr: 0.05, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0, step: 3, maximize: false }],
      [[params[0]], { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 3, maximize: false }],
    ]);
    expect(params.map((p) => opt.state.get(p)!.step)).toEqual([2, 2]);
    // The step's own calls, through a route that only records them, are those (in group order).
    const made: FusedAdamWCall[] = [];
    routeAdamW(
      (call) => {
        made.push(call);
        return false;
      },
      () => opt.step(),
    );
    expect(made.map((c) => [c.params, c.grads, c.expAvg, c.hyper])).toEqual([...ahead].reverse().map((c) => [c.params, c.grads, c.expAvg, c.hyper]));
    expect(params.map((p) => opt.state.get(p)!.step)).toEqual([3, 3]);
    // Not fused (AMSGrad), or not this optimizer's: none.
    expect(new AdamW(params, { amsgrad: true }).nextFusedCalls(params)).toBeNull();
    expect(opt.nextFusedCalls([parameter(tensor([1, 2]))])).toBeNull();
  });

  it("rejects bad betas naming the field and the value", () => {
    expect(() => new Adam(makeParams("float32"), { betas: [1, 0.9] })).toThrow(/betas\[0\] must be a number in \[0, 1\); got 1/);
    expect(() => new AdamW(makeParams("float32"), { eps: -1 })).toThrow(/eps must be a finite number >= 0; got -1/);
  });
});

describe("param groups and state dicts", () => {
  it("applies each group's own hyperparameters", () => {
    const params = makeParams("float64");
    const opt = new SGD([{ params: [params[0]], lr: 0.05 }, { params: [params[1]] }], { lr: 0.01 });
    expect(opt.paramGroups.map((g) => g.lr)).toEqual([0.05, 0.01]);
    lossStep(params, opt);
    const g = grads(INIT);
    expectClose([params[0]], [INIT[0].map((x, j) => x - 0.05 * g[0][j])], 1e-12, "group 0");
    expectClose([params[1]], [INIT[1].map((x, j) => x - 0.01 * g[1][j])], 1e-12, "group 1");
    expect(() => opt.addParamGroup({ params: [params[0]] })).toThrow(/already in another group/);
  });

  it("uses PyTorch's layout: state by parameter index, snake_case group fields, params as indices", () => {
    const params = makeParams("float32");
    const opt = new AdamW([{ params: [params[0]] }, { params: [params[1]], weightDecay: 0 }], { lr: 0.01 });
    lossStep(params, opt);
    const sd = opt.stateDict();
    expect(Object.keys(sd.state)).toEqual(["0", "1"]);
    expect(sd.state["1"].step).toBe(1);
    expect((sd.state["1"].exp_avg as Tensor).shape).toEqual([4]);
    expect(sd.param_groups[0]).toEqual({
      lr: 0.01,
      betas: [0.9, 0.999],
      eps: 1e-8,
      weight_decay: 0.01,
      amsgrad: false,
      maximize: false,
      fused: true,
      params: [0],
    });
    expect(sd.param_groups[1].weight_decay).toBe(0);
    expect(sd.param_groups[1].params).toEqual([1]);
  });

  for (const kind of ["AdamW", "SGD"] as const) {
    it(`${kind}: save, flatten to tensors + JSON, load into a fresh optimizer, and continue identically`, () => {
      const make = (ps: Tensor[], lr: number): Optimizer =>
        kind === "AdamW"
          ? new AdamW(ps, { lr, weightDecay: 0.1, amsgrad: true })
          : new SGD(ps, { lr, momentum: 0.9, nesterov: true });
      const a = makeParams("float32");
      const optA = make(a, 0.05);
      for (let s = 0; s < 3; s++) lossStep(a, optA);

      const { tensors, meta } = flattenOptimizerState(optA.stateDict());
      const json = JSON.parse(JSON.stringify(meta));
      const b = makeParams("float32", a.map((p) => p.toArray()));
      const optB = make(b, 123);
      optB.loadStateDict(unflattenOptimizerState(tensors, json));
      expect(optB.paramGroups[0].lr).toBe(0.05);

      for (let s = 0; s < 3; s++) {
        lossStep(a, optA);
        lossStep(b, optB);
      }
      a.forEach((p, i) => expect(b[i].toArray()).toEqual(p.toArray()));
      // The loaded state is a copy: the source tensors can be freed without harm.
      for (const t of Object.values(tensors)) t.dispose();
      lossStep(b, optB);
    });
  }

  it("refuses a state dict that does not fit, before changing anything", () => {
    const params = makeParams("float32");
    const opt = new AdamW(params, { lr: 0.01 });
    lossStep(params, opt);
    const sd = opt.stateDict();
    const other = new AdamW([params[0]], { lr: 0.5 });
    expect(() => other.loadStateDict(sd)).toThrow(/group 0 has 2 parameters in the state and 1 here/);
    const swapped = new AdamW([params[1], params[0]], { lr: 0.5 });
    expect(() => swapped.loadStateDict(sd)).toThrow(/state 0.exp_avg: expected shape \[4\], got \[2, 3\]/);
    expect(swapped.paramGroups[0].lr).toBe(0.5);
    expect(() => unflattenOptimizerState({}, { format: "other", version: 1 } as never)).toThrow(/unknown metadata format "other"/);
  });

  it("zeroGrad drops or zeroes the gradients of every group", () => {
    const params = makeParams("float32");
    const opt = new SGD(params, { lr: 0.1 });
    lossStep(params, opt);
    opt.zeroGrad(false);
    expect(params[0].grad!.toArray().every((x) => x === 0)).toBe(true);
    opt.zeroGrad();
    expect(params.every((p) => p.grad === null)).toBe(true);
  });
});
