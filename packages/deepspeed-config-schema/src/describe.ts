/**
 * Puts a schema into words ("an integer from 0 to 3", "\"cpu\", \"nvme\" or \"none\"") and a
 * value into a short literal, for the sentences of ConfigProblem. A `title` on a subschema is
 * taken as its description, so the schema can word a pattern or a long list itself.
 */
import { type JsonSchema, deref } from "./schema.js";

/** The alternatives a schema accepts, each in words. */
export function allowedAlternatives(schema: JsonSchema): string[] {
  const resolved = deref(schema);
  // An object's title names the block, not the values it takes; a scalar's title words its rule.
  if (resolved.title !== undefined && resolved.type !== "object") return [resolved.title];
  const branches = resolved.anyOf ?? resolved.oneOf;
  if (branches !== undefined) return unique(branches.flatMap(allowedAlternatives));
  if (resolved.const !== undefined) return [literal(resolved.const)];
  if (resolved.enum !== undefined) return resolved.enum.map(literal);
  const types = resolved.type === undefined ? [] : typeof resolved.type === "string" ? [resolved.type] : resolved.type;
  if (types.length === 0) return ["a valid value"];
  return types.map((type) => typeInWords(type, resolved));
}

/** "a, b or c"; a list of literals reads "one of a, b, c". */
export function joinAlternatives(alternatives: readonly string[]): string {
  if (alternatives.length <= 1) return alternatives[0] ?? "nothing";
  if (alternatives.length > 2 && alternatives.every(isLiteral)) return `one of ${alternatives.join(", ")}`;
  return `${alternatives.slice(0, -1).join(", ")} or ${alternatives[alternatives.length - 1]}`;
}

/** Whether the schema takes the string "auto" anywhere among its alternatives. */
export function acceptsAuto(schema: JsonSchema): boolean {
  const resolved = deref(schema);
  if (resolved.const === "auto") return true;
  if (resolved.enum?.includes("auto") === true) return true;
  return (resolved.anyOf ?? resolved.oneOf ?? []).some(acceptsAuto);
}

/** String literals a schema names (enum, const, examples), for "did you mean" on values. */
export function literalCandidates(schema: JsonSchema): string[] {
  const resolved = deref(schema);
  const own = [...(resolved.enum ?? []), ...(resolved.const === undefined ? [] : [resolved.const]), ...(resolved.examples ?? [])];
  const nested = (resolved.anyOf ?? resolved.oneOf ?? []).flatMap(literalCandidates);
  return unique([...own.filter((v): v is string => typeof v === "string"), ...nested]);
}

const MAX_SHOWN = 60;

/** A value as it would appear in the JSON file, cut short when long. */
export function showValue(value: unknown): string {
  const text = value === undefined ? "undefined" : JSON.stringify(value);
  return text.length > MAX_SHOWN ? `${text.slice(0, MAX_SHOWN - 1)}…` : text;
}

function typeInWords(type: string, schema: JsonSchema): string {
  switch (type) {
    case "integer":
      return `an integer${rangeInWords(schema)}`;
    case "number":
      return `a number${rangeInWords(schema)}`;
    case "boolean":
      return "true/false";
    case "null":
      return "null";
    case "string":
      if (schema.pattern !== undefined) return `a string matching /${schema.pattern}/`;
      return schema.minLength !== undefined && schema.minLength > 0 ? "a non-empty string" : "a string";
    case "array":
      return arrayInWords(schema);
    case "object":
      return "an object";
    default:
      return `a ${type}`;
  }
}

function rangeInWords(schema: JsonSchema): string {
  const low = schema.minimum ?? schema.exclusiveMinimum;
  const high = schema.maximum ?? schema.exclusiveMaximum;
  const lowOpen = schema.minimum === undefined && schema.exclusiveMinimum !== undefined;
  const highOpen = schema.maximum === undefined && schema.exclusiveMaximum !== undefined;
  if (low !== undefined && high !== undefined) {
    if (!lowOpen && !highOpen) return ` from ${low} to ${high}`;
    return ` ${lowOpen ? ">" : "≥"} ${low} and ${highOpen ? "<" : "≤"} ${high}`;
  }
  if (low !== undefined) return ` ${lowOpen ? ">" : "≥"} ${low}`;
  if (high !== undefined) return ` ${highOpen ? "<" : "≤"} ${high}`;
  return "";
}

function arrayInWords(schema: JsonSchema): string {
  const { minItems, maxItems } = schema;
  const count =
    minItems !== undefined && minItems === maxItems ? ` of ${minItems} items`
    : minItems !== undefined && minItems > 0 ? ` of at least ${minItems} item${minItems === 1 ? "" : "s"}`
    : "";
  if (schema.items === undefined) return `a list${count}`;
  return `a list${count}, each ${joinAlternatives(allowedAlternatives(schema.items))}`;
}

function literal(value: unknown): string {
  return JSON.stringify(value);
}

function isLiteral(text: string): boolean {
  return text.startsWith('"') || text === "null" || /^-?\d/.test(text);
}

function unique<T>(items: readonly T[]): T[] {
  return [...new Set(items)];
}
