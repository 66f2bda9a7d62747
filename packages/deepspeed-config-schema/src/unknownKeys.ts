/**
 * The problem for a key DeepSpeed does not know at that level: a typo (with the closest known
 * key), a key in the wrong block (with the block it belongs to), and what DeepSpeed itself would
 * do with it, which depends on the block: the blocks backed by DeepSpeed's pydantic models refuse
 * unknown keys at start-up, every other block and the top level drop them without a word.
 */
import { homesOf } from "./keyIndex.js";
import { type ConfigProblem, type PathSegment, formatPath, subjectOf } from "./problem.js";
import { closest, editDistance } from "./suggest.js";

/** Blocks read through a DeepSpeedConfigModel (extra="forbid"): an unknown key stops DeepSpeed at start-up. */
const STRICT_BLOCKS = [
  "zero_optimization",
  "tensorboard",
  "wandb",
  "csv_monitor",
  "comet",
  "comms_logger",
  "hybrid_engine",
  "timers.throughput",
  "tensor_parallel",
  "weight_quantization",
];

/** Keys with a story the edit distance cannot tell. */
const NOTES: Readonly<Record<string, string>> = {
  "zero_optimization.grad_hooks":
    "config-json.md still documents grad_hooks, but DeepSpeed's ZeRO config model no longer has the field.",
  seq_parallel_communication_data_type:
    "DeepSpeed's attribute has this name, but the key it reads from the config is seq_parallel_comm_data_type.",
  "elasticity.prefer_large_batch":
    "config-json.md's table calls it prefer_large_batch; the code reads prefer_larger_batch.",
};

/** A typo this close is preferred over pointing the key to another block. */
const CLEAR_TYPO = 2;

export function unknownKeyProblem(
  parent: readonly PathSegment[],
  key: string,
  knownKeys: readonly string[],
  value: unknown,
): ConfigProblem {
  const parentPath = formatPath(parent);
  const path = formatPath([...parent, key]);
  const here = [...parent, key].filter((s) => typeof s === "string").join(".");
  const typo = closest(key, knownKeys);
  const homes = homesOf(key).filter((home) => home !== here);

  let message = parentPath === "" ? `The config has no top-level key "${key}"` : `${subjectOf(parentPath)} has no key "${key}"`;
  let suggestion: string | undefined;
  if (typo !== undefined && (editDistance(key, typo) <= CLEAR_TYPO || homes.length === 0)) {
    suggestion = formatPath([...parent, typo]);
    message += `; did you mean "${typo}"?`;
  } else if (homes.length > 0) {
    suggestion = homes[0];
    message += `; it belongs ${homes.slice(0, 3).map(placeOf).join(" or ")}.`;
  } else {
    message += ".";
  }
  const note = NOTES[here];
  if (note !== undefined) message += ` ${note}`;
  message += isStrict(here)
    ? " DeepSpeed refuses unknown keys in this block at start-up."
    : " DeepSpeed would ignore it without a word and use its default.";

  return {
    code: "unknown-key",
    path,
    message,
    value,
    allowed: knownKeys,
    ...(suggestion === undefined ? {} : { suggestion }),
  };
}

function placeOf(home: string): string {
  return home.includes(".") ? `in ${home}` : "at the top level";
}

function isStrict(dottedPath: string): boolean {
  return STRICT_BLOCKS.some((block) => dottedPath.startsWith(`${block}.`) && dottedPath !== block);
}
