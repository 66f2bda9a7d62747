/**
 * Adam (L2 weight decay added to the gradient, optional AMSGrad) and AdamW (decoupled weight decay),
 * PyTorch's `_single_tensor_adam` formulas with the step count kept as a plain number. Groups whose
 * parameters are all contiguous float32 take the backend's fused multi-tensor `adamw` kernel (one
 * launch per group on a GPU) when the formulas coincide: AdamW without AMSGrad, or Adam without
 * weight decay or AMSGrad. Everything else is composed from tensor ops under noGrad.
 */
import { fusedAdamW, lowPrecisionCopyOf, markCopyWritten, maximum } from "@fulgur/tensor";
import type { FusedAdamWCall, Tensor } from "@fulgur/tensor";
import { checkBoolean, checkNonNegative, checkRange } from "../validate";
import { Optimizer, stateDType } from "./optimizer";
import type { ParamGroup, ParamState, ParamsInput } from "./optimizer";

export interface AdamOptions {
  readonly lr?: number;
  readonly betas?: readonly [number, number];
  readonly eps?: number;
  readonly weightDecay?: number;
  readonly amsgrad?: boolean;
  readonly maximize?: boolean;
  /** Use the backend's fused kernel where it applies (default true); false forces the composed path. */
  readonly fused?: boolean;
}

export class Adam extends Optimizer {
  /** AdamW shrinks weights directly (decoupled); Adam adds weightDecay·w to the gradient. */
  protected readonly decoupled: boolean = false;

  constructor(params: ParamsInput, options: AdamOptions = {}) {
    super(params, {
      lr: 1e-3,
      betas: [0.9, 0.999],
      eps: 1e-8,
      weightDecay: 0,
      amsgrad: false,
      maximize: false,
      fused: true,
      ...options,
    });
  }

  protected validateGroup(g: ParamGroup, i: number): void {
    const w = `${this.constructor.name} (group ${i})`;
    const betas = g.betas as unknown;
    if (!Array.isArray(betas) || betas.length !== 2) {
      throw new RangeError(`${w}: betas must be a pair [beta1, beta2]; got ${JSON.stringify(betas)}`);
    }
    checkRange(w, "betas[0]", betas[0], 0, 1);
    checkRange(w, "betas[1]", betas[1], 0, 1);
    checkNonNegative(w, "eps", g.eps);
    checkNonNegative(w, "weightDecay", g.weightDecay);
    checkBoolean(w, "amsgrad", g.amsgrad);
    checkBoolean(w, "maximize", g.maximize);
    checkBoolean(w, "fused", g.fused);
  }

  private initState(p: Tensor, amsgrad: boolean): ParamState {
    return this.stateOf(p, () => {
      const s: ParamState = { step: 0, exp_avg: this.zerosLike(p), exp_avg_sq: this.zerosLike(p) };
      if (amsgrad) s.max_exp_avg_sq = this.zerosLike(p);
      return s;
    });
  }

  /**
   * Whether a group's hyper-parameters let it take the fused AdamW update (`fusedAdamW`): the
   * formulas coincide for AdamW without AMSGrad, and for Adam without weight decay or AMSGrad.
   * Its parameters must also be contiguous float32, as their gradients.
   */
  fusesGroup(g: ParamGroup): boolean {
    return g.fused !== false && g.amsgrad !== true && (this.decoupled || g.weightDecay === 0);
  }

  /**
   * The fused updates of `params` (a group's parameters with gradients): one call per device and
   * distinct step count, as the step makes them. Null when they do not take the fused update.
   * `advance`: count the step in each parameter's state (the step itself), else only read what the
   * next step's count will be.
   */
  private fusedCalls(g: ParamGroup, params: readonly Tensor[], advance: boolean): FusedAdamWCall[] | null {
    const fusable = this.fusesGroup(g) && params.every((p) => p.dtype === "float32" && p.grad?.dtype === "float32" && p.isContiguous() && p.grad.isContiguous());
    if (!fusable) return null;
    const [beta1, beta2] = g.betas as [number, number];
    const lr = g.lr;
    const eps = g.eps as number;
    const weightDecay = g.weightDecay as number;
    const maximize = g.maximize as boolean;
    // Steps differ only when some parameters skipped steps; devices only in a model spread by hand.
    const batches = new Map<string, { step: number; list: { p: Tensor; s: ParamState }[] }>();
    for (const p of params) {
      const s = this.initState(p, false);
      const step = (s.step as number) + 1;
      if (advance) s.step = step;
      const key = `${p.device}/${step}`;
      const batch = batches.get(key) ?? { step, list: [] };
      batch.list.push({ p, s });
      batches.set(key, batch);
    }
    return [...batches.values()].map(({ step, list }) => {
      // Autocast's bf16 copies of these parameters are written in the same pass (see
      // @fulgur/tensor's autocastCopies), so the next forward casts nothing.
      const copies = list.map((e) => lowPrecisionCopyOf(e.p));
      return {
        params: list.map((e) => e.p),
        grads: list.map((e) => e.p.grad!),
        expAvg: list.map((e) => e.s.exp_avg as Tensor),
        expAvgSq: list.map((e) => e.s.exp_avg_sq as Tensor),
        hyper: { lr, beta1, beta2, eps, weightDecay, step, maximize },
        lowPrecision: copies.some((c) => c !== null) ? copies : undefined,
      };
    });
  }

  /**
   * The fused updates the next `step()` makes for `params` (parameters of this optimizer, each with
   * its gradient), were it called now: their state is made if new, their step counts are not moved.
   * Null when any of them would not take the fused update. The sharding engine runs a unit's
   * update this early, beside backward, and checks that the step's own calls match.
   */
  nextFusedCalls(params: readonly Tensor[]): FusedAdamWCall[] | null {
    const byGroup = new Map<ParamGroup, Tensor[]>();
    for (const p of params) {
      const g = this.paramGroups.find((group) => group.params.includes(p));
      if (!g || !p.grad) return null;
      byGroup.set(g, [...(byGroup.get(g) ?? []), p]);
    }
    const calls: FusedAdamWCall[] = [];
    for (const [g, list] of byGroup) {
      const made = this.fusedCalls(g, list, false);
      if (!made) return null;
      calls.push(...made);
    }
    return calls;
  }

  protected stepGroup(g: ParamGroup): void {
    const [beta1, beta2] = g.betas as [number, number];
    const lr = g.lr;
    const eps = g.eps as number;
    const weightDecay = g.weightDecay as number;
    const amsgrad = g.amsgrad as boolean;
    const maximize = g.maximize as boolean;
    const active = g.params.filter((p) => p.grad);
    if (active.length === 0) return;
    const calls = this.fusedCalls(g, active, true);
    if (calls) {
      // Through the route a strategy installed for its step, if any (the offloaded step streams
      // part of the host state through the GPU), else on the parameters' backend.
      for (const call of calls) {
        fusedAdamW(call);
        for (const p of call.params) markCopyWritten(p);
      }
      return;
    }

    for (const p of active) {
      const s = this.initState(p, amsgrad);
      const step = (s.step as number) + 1;
      s.step = step;
      const dt = stateDType(p);
      const w = p.dtype === dt ? p : p.to(dt);
      let grad: Tensor = p.grad!.dtype === dt ? p.grad! : p.grad!.to(dt);
      if (maximize) grad = grad.neg();
      if (weightDecay !== 0) {
        if (this.decoupled) w.mul_(1 - lr * weightDecay);
        else grad = grad.add(w.mul(weightDecay));
      }
      const expAvg = s.exp_avg as Tensor;
      const expAvgSq = s.exp_avg_sq as Tensor;
      expAvg.mul_(beta1).add_(grad, 1 - beta1);
      expAvgSq.mul_(beta2).add_(grad.mul(grad), 1 - beta2);
      const bc1 = 1 - beta1 ** step;
      const bc2Sqrt = Math.sqrt(1 - beta2 ** step);
      let second = expAvgSq;
      if (amsgrad) {
        const maxSq = s.max_exp_avg_sq as Tensor;
        maxSq.copy_(maximum(maxSq, expAvgSq));
        second = maxSq;
      }
      const denom = second.sqrt().div(bc2Sqrt).add(eps);
      w.add_(expAvg.div(denom), -lr / bc1);
      if (w !== p) p.copy_(w);
    }
  }
}

/** AdamW: Adam with decoupled weight decay (w <- w·(1 - lr·weightDecay) before the Adam update); weightDecay defaults to 0.01. */
export class AdamW extends Adam {
  protected override readonly decoupled: boolean = true;

  constructor(params: ParamsInput, options: AdamOptions = {}) {
    super(params, { weightDecay: 1e-2, ...options });
  }
}
