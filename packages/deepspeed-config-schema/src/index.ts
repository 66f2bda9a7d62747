/**
 * @fulgur/deepspeed-config-schema: the JSON Schema of DeepSpeed's config file (none is published
 * elsewhere), hand-written TypeScript types for it, and validate(), which reports every problem
 * of a config at once, each naming the field, the value given and what is allowed.
 */
export { DEEPSPEED_CONFIG_SCHEMA_ID, type JsonSchema, deepspeedConfigSchema } from "./schema.js";
export {
  DeepSpeedConfigError,
  type ValidateOptions,
  type ValidationResult,
  assertValid,
  isValidConfig,
  validate,
} from "./validate.js";
export { type BatchSizeKey, type BatchSizeResolution, type BatchSizes, resolveBatchSizes } from "./batchSize.js";
export { type FormatOptions, formatProblems } from "./format.js";
export type { ConfigProblem, ProblemCode } from "./problem.js";
export { CONFIG_KEYS } from "./keys.js";
export { closest, editDistance } from "./suggest.js";
export type * from "./types.js";
