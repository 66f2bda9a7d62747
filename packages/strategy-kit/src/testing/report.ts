/**
 * What a conformance run returns: one record per check, each passed, failed (with the reason) or
 * skipped (with why), plus the two ways a caller's test asserts on it: `assertConformance` throws
 * one error listing every failure, `formatReport` prints the whole table.
 */

export type CheckStatus = "pass" | "fail" | "skip";

export interface ConformanceCheck {
  /** Stable name: "contract", "abilities", "train@2", "checkpoint@2", "failure@2". */
  readonly id: string;
  readonly title: string;
  readonly status: CheckStatus;
  /** Why it failed or was skipped; what was measured when it passed. */
  readonly message: string;
  readonly ms: number;
}

export interface ConformanceReport {
  /** The strategy's name, or "(unknown)" when none could be built. */
  readonly strategy: string;
  readonly passed: boolean;
  readonly checks: readonly ConformanceCheck[];
  readonly ms: number;
}

/** Collects checks in order; a check asked for twice keeps its first result. */
export class CheckList {
  private readonly checks: ConformanceCheck[] = [];

  add(id: string, title: string, problems: readonly string[], okMessage: string, ms: number): void {
    this.push({ id, title, status: problems.length === 0 ? "pass" : "fail", message: problems.length === 0 ? okMessage : problems.join("\n"), ms });
  }

  skip(id: string, title: string, why: string): void {
    this.push({ id, title, status: "skip", message: why, ms: 0 });
  }

  private push(check: ConformanceCheck): void {
    if (!this.checks.some((c) => c.id === check.id)) this.checks.push(Object.freeze(check));
  }

  report(strategy: string, ms: number): ConformanceReport {
    const checks = Object.freeze([...this.checks]);
    return Object.freeze({ strategy, passed: checks.every((c) => c.status !== "fail"), checks, ms });
  }
}

const MARK: Record<CheckStatus, string> = { pass: "✓", fail: "✗", skip: "-" };

const indent = (text: string): string => text.split("\n").map((l) => `      ${l}`).join("\n");

/** The report as text: one line per check, the reasons of failures and skips below them. */
export function formatReport(report: ConformanceReport): string {
  const lines = [`strategy conformance of ${report.strategy}: ${report.passed ? "passed" : "FAILED"} in ${(report.ms / 1000).toFixed(1)} s`];
  for (const c of report.checks) {
    // Checks made in the same world share its time: it is shown once, on the training check.
    lines.push(`  ${MARK[c.status]} ${c.id}: ${c.title}${c.ms > 0 ? ` (${c.ms} ms)` : ""}`);
    if (c.status !== "pass" || c.message) lines.push(indent(c.message));
  }
  return lines.join("\n");
}

/** The strategy failed conformance checks; the message lists each with its reason. */
export class ConformanceError extends Error {
  override readonly name: string = "ConformanceError";
  constructor(readonly report: ConformanceReport) {
    const failed = report.checks.filter((c) => c.status === "fail");
    super(
      `${report.strategy} failed ${failed.length} of ${report.checks.length} conformance check(s):\n` +
        failed.map((c) => `  ✗ ${c.id}: ${c.title}\n${indent(c.message)}`).join("\n"),
    );
  }
}

/** Throws ConformanceError listing every failed check; returns quietly when all passed or were skipped. */
export function assertConformance(report: ConformanceReport): void {
  if (!report.passed) throw new ConformanceError(report);
}
