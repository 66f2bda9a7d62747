/**
 * Shape checks for plugins (DESIGN.md, decision 11): an object is a Strategy if it has the members
 * and contract version of one, whatever class made it. Each check lists everything missing at once.
 */
import { CONTRACT_VERSION, isCompatibleContract } from "./version";

type MemberKind = "function" | "string" | "number" | "boolean";

const STRATEGY_MEMBERS: Record<string, MemberKind> = {
  name: "string",
  setup: "function",
  setupModule: "function",
  setupOptimizer: "function",
  backward: "function",
  optimizerStep: "function",
  reduce: "function",
  barrier: "function",
  broadcast: "function",
  moduleStateDict: "function",
  loadModuleStateDict: "function",
  saveCheckpoint: "function",
  loadCheckpoint: "function",
  teardown: "function",
};

const ACCELERATOR_MEMBERS: Record<string, MemberKind> = {
  name: "string",
  isAvailable: "function",
  deviceCount: "function",
  deviceFor: "function",
  setupDevice: "function",
  memoryStats: "function",
  teardown: "function",
};

const PRECISION_MEMBERS: Record<string, MemberKind> = {
  name: "string",
  convertModule: "function",
  forwardContext: "function",
  backward: "function",
  optimizerStep: "function",
  stateDict: "function",
  loadStateDict: "function",
};

const CHECKPOINT_IO_MEMBERS: Record<string, MemberKind> = {
  name: "string",
  save: "function",
  load: "function",
  remove: "function",
};

const CLUSTER_ENVIRONMENT_MEMBERS: Record<string, MemberKind> = {
  name: "string",
  detect: "function",
  createsProcessesExternally: "boolean",
  worldSize: "function",
  globalRank: "function",
  localRank: "function",
  nodeRank: "function",
  mainAddress: "function",
  mainPort: "function",
};

/** Returns the problems that keep `value` from being a `what`; empty when it conforms. */
export function contractProblems(what: string, members: Record<string, MemberKind>, value: unknown): string[] {
  if (value === null || (typeof value !== "object" && typeof value !== "function")) {
    return [`expected an object implementing ${what}, got ${value === null ? "null" : typeof value}`];
  }
  const v = value as Record<string, unknown>;
  const problems: string[] = [];
  if (!isCompatibleContract(v.contractVersion)) {
    problems.push(
      `contractVersion is ${JSON.stringify(v.contractVersion)}; this @fulgur/core speaks contract version ${CONTRACT_VERSION}`,
    );
  }
  for (const [key, kind] of Object.entries(members)) {
    const actual = typeof v[key];
    if (actual !== kind) problems.push(`${key} should be a ${kind}, is ${v[key] === undefined ? "missing" : actual}`);
  }
  return problems;
}

function assertContract(what: string, members: Record<string, MemberKind>, value: unknown, label: string): void {
  const problems = contractProblems(what, members, value);
  if (problems.length > 0) {
    throw new TypeError(`${label} does not implement the ${what} contract: ${problems.join("; ")}`);
  }
}

export const isStrategy = (v: unknown): boolean => contractProblems("Strategy", STRATEGY_MEMBERS, v).length === 0;
export const isAccelerator = (v: unknown): boolean =>
  contractProblems("Accelerator", ACCELERATOR_MEMBERS, v).length === 0;
export const isPrecision = (v: unknown): boolean => contractProblems("Precision", PRECISION_MEMBERS, v).length === 0;
export const isCheckpointIO = (v: unknown): boolean =>
  contractProblems("CheckpointIO", CHECKPOINT_IO_MEMBERS, v).length === 0;

/** A cluster environment states no contract version: it is a plain description of where a rank stands. */
export const isClusterEnvironment = (v: unknown): boolean => {
  if (v === null || typeof v !== "object") return false;
  const o = v as Record<string, unknown>;
  return Object.entries(CLUSTER_ENVIRONMENT_MEMBERS).every(([k, kind]) => typeof o[k] === kind);
};

export const assertStrategy = (v: unknown, label = "value"): void =>
  assertContract("Strategy", STRATEGY_MEMBERS, v, label);
export const assertAccelerator = (v: unknown, label = "value"): void =>
  assertContract("Accelerator", ACCELERATOR_MEMBERS, v, label);
export const assertPrecision = (v: unknown, label = "value"): void =>
  assertContract("Precision", PRECISION_MEMBERS, v, label);
export const assertCheckpointIO = (v: unknown, label = "value"): void =>
  assertContract("CheckpointIO", CHECKPOINT_IO_MEMBERS, v, label);
