// SGD, Adam and AdamW against PyTorch 2.11's own optimizers: six steps from the same start with the
// same gradients (fixtures/torch_optim.json, made by scripts/fixtures/make_torch_fixtures.py in float64).
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { noGrad, tensor } from "@fulgur/tensor";
import { Adam, AdamW, type Optimizer, SGD } from "../src";

const fx = JSON.parse(readFileSync(new URL("./fixtures/torch_optim.json", import.meta.url), "utf8"));

function make(name: string, p: ReturnType<typeof tensor>, kw: Record<string, unknown>): Optimizer {
  const betas = kw.betas as [number, number] | undefined;
  const common = { lr: kw.lr as number, weightDecay: (kw.weight_decay as number) ?? 0 };
  if (name.startsWith("sgd")) {
    return new SGD([p], { ...common, momentum: (kw.momentum as number) ?? 0, nesterov: Boolean(kw.nesterov), dampening: (kw.dampening as number) ?? 0 });
  }
  const opts = { ...common, betas, eps: kw.eps as number, amsgrad: Boolean(kw.amsgrad) };
  return name.startsWith("adamw") ? new AdamW([p], opts) : new Adam([p], opts);
}

describe("optimizers against PyTorch trajectories", () => {
  for (const [name, c] of Object.entries(fx.cases as Record<string, { kwargs: Record<string, unknown>; traj: number[][] }>)) {
    for (const dtype of ["float64", "float32"] as const) {
      it(`${name} (${dtype})`, () => {
        const p = tensor(fx.p0, { dtype, requiresGrad: true });
        const opt = make(name, p, c.kwargs);
        (fx.grads as number[][]).forEach((g, step) => {
          noGrad(() => {
            p.grad?.dispose();
            p.grad = tensor(g, { dtype });
          });
          opt.step();
          const got = p.toArray();
          c.traj[step].forEach((v, i) => expect(got[i], `step ${step} element ${i}`).toBeCloseTo(v, dtype === "float64" ? 12 : 5));
        });
      });
    }
  }
});
