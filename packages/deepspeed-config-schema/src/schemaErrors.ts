/**
 * Turns ajv's errors into ConfigProblems: one problem per field, in words.
 *
 * ajv with allErrors reports every failed keyword, including each failed branch of an anyOf
 * ("not an integer", "not \"auto\"", "matches no branch"). A reader wants one sentence per
 * field, so a field whose anyOf failed as a whole is summarised from the anyOf's alternatives,
 * while a field that matched a branch's type and failed inside it (a list with one bad item)
 * is reported at the innermost failing place instead.
 */
import type { ErrorObject } from "./ajv.js";
import { acceptsAuto, allowedAlternatives, joinAlternatives, literalCandidates, showValue } from "./describe.js";
import { type ConfigProblem, formatPath, segmentsOf, subjectOf, valueAt } from "./problem.js";
import { type JsonSchema, deref } from "./schema.js";
import { closest } from "./suggest.js";
import { unknownKeyProblem } from "./unknownKeys.js";

const BRANCHING = new Set(["anyOf", "oneOf"]);
/** Keywords whose error sits on an object but is about one of its children. */
const ABOUT_CHILDREN = new Set(["additionalProperties", "required"]);

export function problemsFromSchemaErrors(errors: readonly ErrorObject[], config: unknown): ConfigProblem[] {
  // "if" only says its "then" failed; the then's own errors carry the detail.
  const relevant = errors.filter((error) => error.keyword !== "if");
  const hasChildErrors = (path: string): boolean =>
    relevant.some(
      (other) => other.instancePath.startsWith(`${path}/`) || (other.instancePath === path && ABOUT_CHILDREN.has(other.keyword)),
    );

  // Fields whose anyOf speaks for them, and fields whose anyOf defers to errors deeper down:
  // either way the individual branch errors at that exact field are noise.
  const branchPaths = new Set(relevant.filter((error) => BRANCHING.has(error.keyword)).map((error) => error.instancePath));

  const problems: ConfigProblem[] = [];
  const seen = new Set<string>();
  for (const error of relevant) {
    let problem: ConfigProblem | undefined;
    if (BRANCHING.has(error.keyword)) {
      if (!hasChildErrors(error.instancePath)) problem = valueProblem(error, config);
    } else if (error.keyword === "additionalProperties") {
      problem = unknownKey(error, config);
    } else if (error.keyword === "required") {
      problem = missingKey(error, config);
    } else if (!branchPaths.has(error.instancePath)) {
      problem = valueProblem(error, config);
    }
    if (problem === undefined) continue;
    const identity = `${problem.code} ${problem.path}`;
    if (seen.has(identity)) continue;
    seen.add(identity);
    problems.push(problem);
  }
  return problems;
}

function valueProblem(error: ErrorObject, config: unknown): ConfigProblem {
  const segments = segmentsOf(error.instancePath, config);
  const path = formatPath(segments);
  const value = valueAt(config, segments);
  const schema = (error.parentSchema ?? {}) as JsonSchema;
  const allowed = allowedAlternatives(schema);
  const mustBe = joinAlternatives(allowed);

  if (value === "auto" && !acceptsAuto(schema)) {
    return {
      code: "auto-not-allowed",
      path,
      value,
      allowed,
      message:
        `${subjectOf(path)} is "auto", but nothing fills "auto" in here (Transformers and Accelerate fill only ` +
        `certain keys): it must be ${mustBe}.`,
    };
  }

  let message = `${subjectOf(path)} is ${showValue(value)}, but it must be ${mustBe}.`;
  let suggestion: string | undefined;
  if (typeof value === "string") {
    const unquoted = unquotedLiteral(value);
    if (unquoted !== undefined && allowed.some((text) => acceptsLiteral(text, unquoted))) {
      message += " Write it without quotes.";
      suggestion = value;
    } else {
      suggestion = closest(value, literalCandidates(schema));
      if (suggestion !== undefined) message += ` Did you mean "${suggestion}"?`;
    }
  }
  return { code: "invalid-value", path, value, allowed, message, ...(suggestion === undefined ? {} : { suggestion }) };
}

function unknownKey(error: ErrorObject, config: unknown): ConfigProblem {
  const parent = segmentsOf(error.instancePath, config);
  const key = String((error.params as { additionalProperty: string }).additionalProperty);
  const schema = deref((error.parentSchema ?? {}) as JsonSchema);
  return unknownKeyProblem(parent, key, Object.keys(schema.properties ?? {}), valueAt(config, [...parent, key]));
}

function missingKey(error: ErrorObject, config: unknown): ConfigProblem {
  const parent = segmentsOf(error.instancePath, config);
  const key = String((error.params as { missingProperty: string }).missingProperty);
  const schema = deref((error.parentSchema ?? {}) as JsonSchema);
  const property = schema.properties?.[key];
  return {
    code: "missing-key",
    path: formatPath([...parent, key]),
    message: `${subjectOf(formatPath(parent))} is missing "${key}", which is required here.`,
    ...(property === undefined ? {} : { allowed: allowedAlternatives(property) }),
  };
}

/** "32" → 32, "true" → true: a number or boolean written in quotes. */
function unquotedLiteral(text: string): number | boolean | undefined {
  if (text === "true") return true;
  if (text === "false") return false;
  if (/^\s*-?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$/.test(text)) return Number(text);
  return undefined;
}

function acceptsLiteral(alternative: string, literal: number | boolean): boolean {
  if (typeof literal === "boolean") return alternative === "true/false";
  return alternative.startsWith("a number") || (alternative.startsWith("an integer") && Number.isInteger(literal));
}
