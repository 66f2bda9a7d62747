/**
 * @fulgur/strategy-kit/testing: the conformance kit a strategy author runs in their own CI. It
 * checks the contract's shape and the abilities a strategy has, trains the tiny GPT at world 1, 2
 * and 3 on the CPU against one device's losses (gradient accumulation and clipping included),
 * round-trips a checkpoint through the strategy, and injects a failure on one rank of a launched
 * world, which must end every rank quickly, naming it. Test-framework neutral: it returns a report.
 *
 *   const report = await runStrategyConformance(
 *     { module: new URL("../dist/index.js", import.meta.url).href, export: "MyStrategy" },
 *   );
 *   assertConformance(report); // throws one error listing every failed check
 */
export { runStrategyConformance, plannedChecks } from "./runConformance";
export { describeConformance, type TestRegistrar } from "./suite";
export {
  ConformanceError,
  assertConformance,
  formatReport,
  type CheckStatus,
  type ConformanceCheck,
  type ConformanceReport,
} from "./report";
export {
  ConformanceOptionError,
  type ConformanceOptions,
  type FailureOptions,
  type StrategyFactory,
  type StrategyModule,
  type StrategySource,
} from "./options";
export { ABILITIES } from "./contract";
export { conformanceCpuAccelerator } from "./cpuAccelerator";
