/**
 * Where each key name is at home in the schema, so a key put in the wrong block can be pointed
 * to the right one: `aio` inside zero_optimization (the Transformers guide's ZeRO-Infinity
 * example does this) belongs at the top level, `loss_scale` under bf16 belongs to fp16.
 */
import { type JsonSchema, deepspeedConfigSchema, deref } from "./schema.js";

let index: Map<string, string[]> | undefined;

/** The dotted paths where `key` is a known property; user-named map entries show as `<name>`. */
export function homesOf(key: string): readonly string[] {
  index ??= buildIndex();
  return index.get(key) ?? [];
}

function buildIndex(): Map<string, string[]> {
  const homes = new Map<string, string[]>();
  const visit = (schema: JsonSchema, path: readonly string[]): void => {
    const resolved = deref(schema);
    for (const [key, child] of Object.entries(resolved.properties ?? {})) {
      const home = [...path, key].join(".");
      const known = homes.get(key) ?? [];
      if (!known.includes(home)) homes.set(key, [...known, home]);
      visit(child, [...path, key]);
    }
    if (typeof resolved.additionalProperties === "object") visit(resolved.additionalProperties, [...path, "<name>"]);
    for (const branch of [...(resolved.allOf ?? []), ...(resolved.anyOf ?? [])]) visit(branch, path);
    if (resolved.then !== undefined) visit(resolved.then, path);
  };
  visit(deepspeedConfigSchema, []);
  return homes;
}
