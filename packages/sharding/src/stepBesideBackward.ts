/**
 * [Note: the step beside backward] An offloaded optimizer step runs on the CPU's threads, and
 * waits for backward to end, although a unit's gradients are final long before that: the last
 * blocks' are in while the first blocks' backward has not started. So when an optimizer step
 * follows this backward (the last micro-batch of an accumulation window), each offloaded unit
 * whose state lives in host memory is handed to the CPU's worker threads as soon as its gradient
 * slice has landed there, while the main thread drives the rest of backward. ZeRO-Offload overlaps
 * only the gradients' copies with backward and steps after it (its one-step delayed update changes
 * the numbers); this changes none.
 *
 * Exactness: each element's AdamW update depends on that element alone, so a unit updated early
 * gets the bits the step would give it, as long as
 * - nothing changes its gradients afterwards: no later micro-batch (the strategy says whether a
 *   step follows), no clipping by the global norm or loss scaling (their factor needs every
 *   gradient: refused where configured, an error where a step asks for it);
 * - the step's hyper-parameters are those it was updated with: checked per parameter at the step,
 *   so a learning rate changed between backward and the step is an error, never a silent update;
 * - nothing reads the unit's master slice before the step: a forward in between is an error (a
 *   unit kept gathered computes with its copy on the device, gathered again after the step).
 * The optimizer's own `step()` still runs: its fused calls for these parameters find them done
 * (the route waits for their threads) and it moves their step counts as any step does.
 */
import { Adam, type Optimizer } from "@fulgur/nn";
import { type AdamWHyper, type FusedAdamWCall, type PendingWork, type Tensor, fusedAdamWBeside, settleWork } from "@fulgur/tensor";
import type { FlatUnit } from "./flatUnit";

const OPTION = "offloadStepInBackward";

interface Started {
  readonly unit: FlatUnit;
  readonly hyper: AdamWHyper;
  readonly pending: PendingWork;
}

/**
 * Whether a unit can be updated beside backward: offloaded to host memory (not on disk), stepped on
 * the CPU, one replica, not the root unit (reduced only at the step), and not resident (whose
 * module computes with the master slice itself). A unit kept gathered (ZeRO stages 1 and 2)
 * computes with its own copy on the device, gathered again after the step.
 */
function updatesBeside(unit: FlatUnit): boolean {
  return unit.onHost && !unit.onDisk && !unit.streamed && !unit.gradsOnDevice && !unit.resident && unit.name !== "" && (unit.groups.replicate?.size ?? 1) === 1;
}

/**
 * Why not every group of an optimizer takes the fused AdamW update (the one call the engine routes:
 * updated beside backward, or streamed through the device), or null when every group does.
 */
export function fusedAdamWProblem(optimizer: Optimizer): string | null {
  if (!(optimizer instanceof Adam)) return `the optimizer is ${optimizer.constructor.name}; it needs Adam or AdamW, whose fused update runs per parameter`;
  const slow = optimizer.paramGroups.findIndex((g) => !optimizer.fusesGroup(g));
  if (slow >= 0) return `group ${slow} of ${optimizer.constructor.name} does not take the fused update (AMSGrad, fused: false, or Adam's L2 weight decay)`;
  return null;
}

/** What a run sets that keeps the step beside backward from acting or from giving the step's numbers. */
export interface BesideSettings {
  /** Why nothing is offloaded (so no CPU step to move) and what to do instead, or null. */
  readonly notOffloaded: { readonly why: string; readonly instead: string } | null;
  /** Who clips by the global norm ("gradient_clipping is 1 in config.json") and what to do instead, or null. */
  readonly clip: { readonly by: string; readonly instead: string } | null;
  /** What scales the loss (fp16), or null. */
  readonly lossScaling: string | null;
}

/**
 * The message refusing offloadStepInBackward, or null where nothing clashes. Clipping and loss
 * scaling need every gradient before any unit is updated, so they change the numbers.
 */
export function stepBesideBackwardRefusal(strategyName: string, settings: BesideSettings): string | null {
  const refuse = (why: string, instead: string): string => `${strategyName} option ${OPTION}: got true; ${why}. ${instead}, or leave ${OPTION} out`;
  const { notOffloaded, clip, lossScaling } = settings;
  if (notOffloaded) return refuse(`it updates offloaded units on the CPU beside backward, but ${notOffloaded.why}`, notOffloaded.instead);
  if (clip) return refuse(`${clip.by}, and clipping needs every gradient before any unit is updated`, clip.instead);
  if (lossScaling) return refuse(`${lossScaling} scales the loss, and an overflow anywhere must skip every unit's update`, "Use bf16-mixed");
  return null;
}

function sameHyper(a: AdamWHyper, b: AdamWHyper): boolean {
  return a.lr === b.lr && a.beta1 === b.beta1 && a.beta2 === b.beta2 && a.eps === b.eps && a.weightDecay === b.weightDecay && a.step === b.step && a.maximize === b.maximize;
}

const describe = (h: AdamWHyper): string => `lr ${h.lr}, betas [${h.beta1}, ${h.beta2}], eps ${h.eps}, weightDecay ${h.weightDecay}, step ${h.step}${h.maximize ? ", maximize" : ""}`;

export class StepBesideBackward {
  private optimizer: Adam | null = null;
  /** Whether the backward under way is followed by a step, with an optimizer to step. */
  private armed = false;
  /** Units reduced in this backward whose gradients have not landed yet. */
  private waiting: FlatUnit[] = [];
  /** Parameters updated (or being updated) beside backward and not yet taken by a step. */
  private readonly started = new Map<Tensor, Started>();
  /** Those the step's calls took, whose threads the route waits for. */
  private taken: PendingWork[] = [];
  /** Units updated beside backward, over the run (tests and the step trace read it). */
  unitsStepped = 0;

  constructor(private readonly onHost: <T>(fn: () => T) => T) {}

  /** The optimizer whose updates run beside backward; one that cannot is refused, with why. */
  attach(optimizer: Optimizer): void {
    const problem = fusedAdamWProblem(optimizer);
    if (problem) throw new Error(`${OPTION}: ${problem}; use AdamW (or Adam without weight decay), or leave ${OPTION} off`);
    this.optimizer = optimizer as Adam;
  }

  /** Whether parameters were updated beside backward and await their step. */
  get pending(): boolean {
    return this.started.size > 0;
  }

  /** Before a backward: `stepFollows` false inside an accumulation window (the strategy's noBackwardSync). */
  begin(stepFollows: boolean): void {
    if (this.started.size > 0) {
      this.settle();
      throw new Error(
        `${OPTION}: a second backward ran before the optimizer step, but units were already updated beside the first (their gradients were taken as final). ` +
          "Run accumulation micro-batches' backward inside strategy.noBackwardSync (the Trainer does for accumulateGradBatches), or leave " + OPTION + " off",
      );
    }
    this.armed = stepFollows && this.optimizer !== null;
    this.waiting = [];
  }

  /** After `unit`'s gradients were reduced in this backward. */
  reduced(unit: FlatUnit): void {
    if (this.armed && updatesBeside(unit)) this.waiting.push(unit);
    this.poll();
  }

  /** Hands the units whose gradients have landed to the threads (never blocks). */
  poll(): void {
    if (!this.armed) return;
    const landed = this.waiting.filter((u) => u.landGradients());
    if (landed.length === 0) return;
    this.waiting = this.waiting.filter((u) => !landed.includes(u));
    for (const unit of landed) this.start(unit);
  }

  /** After backward: the units still on their way are stepped with the rest. */
  end(): void {
    this.poll();
    this.armed = false;
    this.waiting = [];
  }

  private start(unit: FlatUnit): void {
    unit.finishReductions();
    unit.attachStepGradients();
    const params = unit.optimParams.filter((p) => p.grad !== null);
    // New moments are made in shared host memory, where the threads update them.
    const calls = this.onHost(() => this.optimizer!.nextFusedCalls(params));
    if (!calls) return;
    for (const call of calls) {
      const pending = fusedAdamWBeside(call);
      for (const p of call.params) this.started.set(p, { unit, hyper: call.hyper, pending });
    }
    this.unitsStepped++;
  }

  /**
   * At the step, for one of the optimizer's fused calls: what is left of it to run (the call itself
   * when none of it was updated beside backward, null when all of it was). The taken parameters are
   * checked against the step's hyper-parameters; `finishTaken` waits for their threads.
   */
  split(call: FusedAdamWCall): FusedAdamWCall | null {
    if (this.started.size === 0) return call;
    const rest: number[] = [];
    call.params.forEach((p, i) => {
      const s = this.started.get(p);
      if (!s) {
        rest.push(i);
        return;
      }
      if (!sameHyper(s.hyper, call.hyper)) {
        this.settle();
        throw new Error(
          `${OPTION}: unit "${s.unit.name}" was updated beside backward with ${describe(s.hyper)}, but the optimizer step asks for ${describe(call.hyper)}. ` +
            "Change hyper-parameters before backward (a scheduler steps after the optimizer), or leave " + OPTION + " off",
        );
      }
      this.started.delete(p);
      if (!this.taken.includes(s.pending)) this.taken.push(s.pending);
    });
    if (rest.length === call.params.length) return call;
    if (rest.length === 0) return null;
    const pick = <T>(list: readonly T[]): T[] => rest.map((i) => list[i]);
    return { params: pick(call.params), grads: pick(call.grads), expAvg: pick(call.expAvg), expAvgSq: pick(call.expAvgSq), hyper: call.hyper, lowPrecision: call.lowPrecision && pick(call.lowPrecision) };
  }

  /** Waits for the threads of what the step's calls took. */
  finishTaken(): void {
    const taken = this.taken;
    this.taken = [];
    for (const w of taken) w.wait();
  }

  /** After the optimizer step: every parameter updated beside backward must have been taken by it. */
  checkAllTaken(): void {
    if (this.started.size === 0) return;
    const units = [...new Set([...this.started.values()].map((s) => s.unit.name))];
    const count = this.started.size;
    this.settle();
    throw new Error(
      `${OPTION}: ${count} parameter(s) of unit(s) ${units.map((u) => `"${u}"`).join(", ")} were updated beside backward, but the optimizer step did not update them ` +
        "(another optimizer, or their gradients were dropped); leave " + OPTION + " off for this loop",
    );
  }

  /** Refuses a step that clips: its factor needs every gradient, and some units were updated already. */
  refuseClipping(): void {
    if (this.started.size === 0) return;
    this.settle();
    throw new Error(`${OPTION}: this optimizer step clips gradients, but units were already updated beside backward with their unclipped gradients; turn clipping or ${OPTION} off`);
  }

  /** Waits for every update under way and forgets them (errors and teardown); a worker's error is not rethrown here. */
  settle(): void {
    const all = new Set([...this.started.values()].map((s) => s.pending).concat(this.taken));
    this.started.clear();
    this.taken = [];
    // The step failed already, or training is being torn down: their errors are not the first.
    for (const w of all) settleWork(w);
  }
}
