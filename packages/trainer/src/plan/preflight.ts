/**
 * The Trainer's pre-flight check (issue 15): before a strategy is set up or any process launched,
 * the memory plan for the module, the machine and the chosen strategy; `strategy: "auto"` picks
 * from it (autoStrategy.ts), and a strategy that cannot fit is refused with the plan's table
 * unless the user asked to try anyway (`ignoreMemoryPlan`). On the CPU accelerator with no machine
 * described the check does not run (device and host are the same memory, and the old "auto" rule,
 * ddp on several processes else single_device, stays).
 */
import type { Accelerator } from "@fulgur/core";
import type { TrainingModule } from "../trainingModule";
import { chooseStrategy } from "./autoStrategy";
import { type MachineDescription, describeMachine } from "./machine";
import { type MemoryPlan, type PlanCandidate, defaultCandidates, planMemory, renderPlan } from "./memoryPlan";
import { withMetaModel } from "./metaModel";

/** A plan that cannot fit, refused before launch; `plan` holds the figures. */
export class MemoryPlanError extends Error {
  constructor(
    message: string,
    readonly plan: MemoryPlan,
  ) {
    super(message);
    this.name = "MemoryPlanError";
  }
}

export interface PlanRequest {
  readonly module: TrainingModule;
  readonly accelerator: Accelerator | null;
  readonly devices: number;
  readonly numNodes: number;
  readonly precision: string;
  readonly microBatch: number;
  readonly accumulateGradBatches: number;
  readonly machine?: MachineDescription;
  readonly candidates?: readonly PlanCandidate[];
}

/** The plan for a TrainingModule whose network is built on `meta` for the purpose and then undone. */
export async function planTrainingModule(r: PlanRequest): Promise<MemoryPlan> {
  const machine = describeMachine({ devicesPerNode: r.devices, nodes: r.numNodes }, r.machine ?? {}, r.accelerator);
  return withMetaModel(
    r.module,
    () => r.module.configureModel(),
    (module) =>
      planMemory({ module, machine, precision: r.precision, microBatch: r.microBatch, accumulateGradBatches: r.accumulateGradBatches, candidates: r.candidates }),
  );
}

export interface PreflightRequest extends PlanRequest {
  readonly strategy: string | object;
  readonly strategyOptions: Readonly<Record<string, unknown>>;
  readonly ignoreMemoryPlan: boolean;
  /** Where the "auto" line goes (rank 0 only). */
  readonly say: (line: string) => void;
}

export interface PreflightOutcome {
  /** The strategy to resolve: the one asked for, or the one "auto" picked. */
  readonly strategy: string | object;
  readonly plan: MemoryPlan | null;
}

export async function preflight(r: PreflightRequest): Promise<PreflightOutcome> {
  const onGpu = r.accelerator !== null && r.accelerator.name !== "cpu";
  // A Strategy object is the user's own: it is set up as given (its estimate, if any, is not asked here).
  if ((!onGpu && r.machine === undefined) || typeof r.strategy !== "string") return { strategy: r.strategy, plan: null };
  const worldSize = r.devices * r.numNodes;
  const auto = r.strategy === "auto";
  // The strategy asked for is planned with the user's options, beside the rule's candidates.
  const candidates = defaultCandidates(worldSize).filter((c) => auto || c.strategy !== r.strategy);
  if (!auto) candidates.unshift({ strategy: r.strategy, options: r.strategyOptions });
  const plan = await planTrainingModule({ ...r, candidates });
  let name = r.strategy;
  if (auto) {
    const choice = chooseStrategy(plan);
    r.say(`fulgur: ${choice.reason}`);
    name = choice.strategy;
  }
  const row = plan.rows.find((x) => x.strategy === name);
  if (row && row.error === undefined && !row.fits && !r.ignoreMemoryPlan) {
    throw new MemoryPlanError(
      `memory plan: ${name} does not fit at micro-batch ${r.microBatch} (${row.problems.join("; ")})` +
        (row.maxMicroBatch > 0 ? `; micro-batch ${row.maxMicroBatch} fits` : "") +
        `; nothing was launched. Pick a strategy that fits from the plan below, or pass ignoreMemoryPlan: true (fulgur fit --ignore-memory-plan) to try anyway.\n\n${renderPlan(plan)}`,
      plan,
    );
  }
  return { strategy: name, plan };
}
