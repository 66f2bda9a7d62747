/**
 * SGD with momentum, dampening, Nesterov, L2 weight decay and maximize: PyTorch's `_single_tensor_sgd`
 * step for step (the momentum buffer starts as a copy of the first gradient, not zero).
 */
import type { Tensor } from "@fulgur/tensor";
import { checkBoolean, checkNonNegative } from "../validate";
import { Optimizer, stateDType } from "./optimizer";
import type { ParamGroup, ParamsInput } from "./optimizer";

export interface SGDOptions {
  readonly lr?: number;
  readonly momentum?: number;
  readonly dampening?: number;
  readonly nesterov?: boolean;
  readonly weightDecay?: number;
  readonly maximize?: boolean;
}

export class SGD extends Optimizer {
  constructor(params: ParamsInput, options: SGDOptions = {}) {
    super(params, { lr: 1e-3, momentum: 0, dampening: 0, nesterov: false, weightDecay: 0, maximize: false, ...options });
  }

  protected validateGroup(g: ParamGroup, i: number): void {
    const w = `SGD (group ${i})`;
    checkNonNegative(w, "momentum", g.momentum);
    checkNonNegative(w, "dampening", g.dampening);
    checkNonNegative(w, "weightDecay", g.weightDecay);
    checkBoolean(w, "maximize", g.maximize);
    if (checkBoolean(w, "nesterov", g.nesterov) && (!((g.momentum as number) > 0) || g.dampening !== 0)) {
      throw new RangeError(`${w}: nesterov needs momentum > 0 and dampening 0; got momentum ${g.momentum}, dampening ${g.dampening}`);
    }
  }

  protected stepGroup(g: ParamGroup): void {
    const lr = g.lr;
    const momentum = g.momentum as number;
    const dampening = g.dampening as number;
    const weightDecay = g.weightDecay as number;
    for (const p of g.params) {
      if (!p.grad) continue;
      const dt = stateDType(p);
      // Work in the state dtype: a bf16 parameter is updated through a float32 copy.
      const w = p.dtype === dt ? p : p.to(dt);
      let d: Tensor = p.grad.dtype === dt ? p.grad : p.grad.to(dt);
      if (g.maximize) d = d.neg();
      if (weightDecay !== 0) d = d.add(w.mul(weightDecay));
      if (momentum !== 0) {
        const s = this.state.get(p);
        let buf = s?.momentum_buffer as Tensor | undefined;
        if (!buf) {
          buf = d.clone().untrack();
          this.state.set(p, { momentum_buffer: buf });
        } else {
          buf.mul_(momentum).add_(d, 1 - dampening);
        }
        d = g.nesterov ? d.add(buf.mul(momentum)) : buf;
      }
      w.add_(d, -lr);
      if (w !== p) p.copy_(w);
    }
  }
}
