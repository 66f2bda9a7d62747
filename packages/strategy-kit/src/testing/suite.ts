/**
 * One test per check, for any framework with `describe` and `it` (vitest, jest, mocha, node:test):
 * the caller passes its own functions, so the kit imports none. The first test to run starts the
 * conformance run and the others wait for the same report, so the world sizes are trained once.
 */
import { type ConformanceOptions, type StrategySource } from "./options";
import type { ConformanceReport } from "./report";
import { plannedChecks, runStrategyConformance } from "./runConformance";

export interface TestRegistrar {
  describe(name: string, fn: () => void): void;
  /** Give it a timeout that covers the whole run, e.g. `(name, fn) => it(name, fn, 180_000)` in vitest. */
  it(name: string, fn: () => Promise<void>): void;
}

export function describeConformance(t: TestRegistrar, title: string, source: StrategySource, options: ConformanceOptions = {}): void {
  let run: Promise<ConformanceReport> | undefined;
  const report = (): Promise<ConformanceReport> => (run ??= runStrategyConformance(source, options));
  t.describe(title, () => {
    for (const planned of plannedChecks(source, options)) {
      t.it(`${planned.id}: ${planned.title}`, async () => {
        const check = (await report()).checks.find((c) => c.id === planned.id);
        if (!check) throw new Error(`conformance check ${planned.id} was not run`);
        if (check.status === "fail") throw new Error(`${planned.id}: ${check.message}`);
      });
    }
  });
}
