/**
 * ConfigProblems as text for a terminal or an exception: a count, then one numbered line per
 * problem. Each message already names the field, the value and what is allowed.
 */
import type { ConfigProblem } from "./problem.js";

export interface FormatOptions {
  /** The first line; by default "DeepSpeed config: N problem(s):". */
  readonly heading?: string;
}

export function formatProblems(problems: readonly ConfigProblem[], options: FormatOptions = {}): string {
  if (problems.length === 0) return "DeepSpeed config: no problems.";
  const heading = options.heading ?? `DeepSpeed config: ${problems.length} problem${problems.length === 1 ? "" : "s"}:`;
  const width = String(problems.length).length;
  const lines = problems.map((problem, index) => `  ${String(index + 1).padStart(width)}. ${problem.message}`);
  return [heading, ...lines].join("\n");
}
