/**
 * Checks (a): the strategy has the contract's shape, and each optional ability it has (DESIGN.md
 * decision 13) is whole. A core type guard looks at one member, so an ability half implemented
 * (optimizerStateDict without loadOptimizerStateDict, a `launch` that is not a function) is not
 * an error anywhere else: the Trainer silently takes its fallback. Here it is named.
 */
import { type MemoryBreakdown, type MemoryEstimate, type MemoryEstimating, assertStrategy, estimatesMemory } from "@fulgur/core";
import { GPT } from "@fulgur/nn";
import { withDevice } from "@fulgur/tensor";
import { CONFORMANCE_MODEL } from "./trainingLoop";

/** Each ability: the members that make it, and what the Trainer does without it. */
export const ABILITIES: readonly { readonly name: string; readonly members: readonly string[]; readonly fallback: string }[] = [
  { name: "ExceptionAware", members: ["onException"], fallback: "other ranks learn of a failure only when their collectives time out" },
  { name: "BackwardSyncControl", members: ["noBackwardSync"], fallback: "gradients are synchronised on every micro-batch" },
  { name: "Launching", members: ["launch"], fallback: "the ranks must be started by fulgur run, torchrun or SLURM" },
  { name: "ModuleBuilding", members: ["buildModule"], fallback: "configureModel runs on rootDevice" },
  { name: "BatchRunning", members: ["runBatch"], fallback: "forward and backward per micro-batch in the Trainer" },
  { name: "OptimizerStateHandling", members: ["optimizerStateDict", "loadOptimizerStateDict"], fallback: "the optimizer's own stateDict(), flattened" },
  { name: "MemoryEstimating", members: ["estimateMemory"], fallback: "`fulgur plan` has no estimate for the strategy" },
];

/** Problems with the contract itself (members, contract version); empty when it conforms. */
export function contractProblems(strategy: unknown): string[] {
  try {
    assertStrategy(strategy, "the strategy");
  } catch (err) {
    return [(err as Error).message];
  }
  const name = (strategy as { name: string }).name;
  return name.trim() === "" ? ["name is empty; the registry, logs and checkpoints show it"] : [];
}

/** The abilities `strategy` has in full, and the problems of those it has in part. */
export function abilityProblems(strategy: object): { readonly has: string[]; readonly problems: string[] } {
  const s = strategy as Record<string, unknown>;
  const has: string[] = [];
  const problems: string[] = [];
  for (const a of ABILITIES) {
    const present = a.members.filter((m) => m in s && s[m] !== undefined);
    if (present.length === 0) continue;
    const notFunctions = a.members.filter((m) => typeof s[m] !== "function");
    if (notFunctions.length === 0) {
      has.push(a.name);
      continue;
    }
    problems.push(
      `${a.name}: has ${present.join(", ")} but ${notFunctions.map((m) => `${m} is ${m in s ? `a ${typeof s[m]}` : "missing"}`).join(", ")}; ` +
        `the type guard is false, so the Trainer ignores the ability (fallback: ${a.fallback})`,
    );
  }
  // DataParallelLayout holds values, read after setup (training checks them); here only both names.
  const layout = ["dataParallelRank", "dataParallelSize"].filter((m) => m in s);
  if (layout.length === 1) {
    problems.push(`DataParallelLayout: has ${layout[0]} but not ${layout[0] === "dataParallelRank" ? "dataParallelSize" : "dataParallelRank"}; the Trainer shards data by global rank and world size instead`);
  } else if (layout.length === 2) has.push("DataParallelLayout");
  if (estimatesMemory(strategy)) problems.push(...memoryEstimateProblems(strategy));
  return { has, problems };
}

const BREAKDOWN_KEYS = ["parameters", "gradients", "optimizerState", "gatheredUnits", "communication", "activations", "workspace"] as const;

function breakdownProblems(where: string, b: MemoryBreakdown | undefined): string[] {
  if (!b || typeof b !== "object") return [`${where} is ${JSON.stringify(b)}; expected a MemoryBreakdown`];
  const problems: string[] = [];
  let sum = 0;
  for (const k of [...BREAKDOWN_KEYS, "total" as const]) {
    const v = b[k];
    if (typeof v !== "number" || !Number.isFinite(v) || v < 0) problems.push(`${where}.${k} is ${JSON.stringify(v)}; expected a finite number of bytes >= 0`);
    else if (k !== "total") sum += v;
  }
  if (problems.length === 0 && b.total !== sum) problems.push(`${where}.total is ${b.total}, but its parts add up to ${sum}`);
  return problems;
}

/** MemoryEstimating: an estimate for the tiny GPT must be a well-formed record that counts the model. */
function memoryEstimateProblems(strategy: MemoryEstimating): string[] {
  // Built on the CPU: the tiny GPT is a few hundred kilobytes, and the estimate reads only shapes.
  const module = withDevice("cpu", () => new GPT(CONFORMANCE_MODEL, { seed: 0 }));
  try {
    let e: MemoryEstimate;
    try {
      e = strategy.estimateMemory({ module, precision: "32-true", microBatch: 8 });
    } catch (err) {
      return [`MemoryEstimating: estimateMemory threw for the tiny GPT: ${(err as Error).message}`];
    }
    const problems = [...breakdownProblems("estimateMemory().perDevice", e?.perDevice), ...breakdownProblems("estimateMemory().perHost", e?.perHost)];
    if (typeof e?.strategy !== "string") problems.push(`estimateMemory().strategy is ${JSON.stringify(e?.strategy)}; expected the strategy's name`);
    if (typeof e?.disk !== "number" || !(e.disk >= 0)) problems.push(`estimateMemory().disk is ${JSON.stringify(e?.disk)}; expected bytes >= 0`);
    if (!Array.isArray(e?.notes) || !e.notes.every((n) => typeof n === "string")) problems.push("estimateMemory().notes must be an array of strings");
    if (problems.length === 0 && e.perDevice.parameters + e.perHost.parameters <= 0) {
      problems.push("estimateMemory() counts no parameter bytes for the tiny GPT (on devices or hosts)");
    }
    return problems.map((p) => (p.startsWith("MemoryEstimating") ? p : `MemoryEstimating: ${p}`));
  } finally {
    for (const t of [...module.parameters(), ...module.buffers()]) t.dispose();
  }
}
