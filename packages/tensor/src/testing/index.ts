/** Test utilities for Fulgur packages and backend authors: `@fulgur/tensor/testing`. */
export { gradcheck, type GradcheckResult } from "./gradcheck";
export { maxAbsDiff, relativeError } from "./compare";
export {
  CONFORMANCE_TOLERANCE,
  conformanceCases,
  runConformanceCase,
  type ConformanceCase,
  type ConformanceResult,
} from "./conformance";
export { runSplitBackwardCase, type SplitBackwardResult } from "./splitBackward";
