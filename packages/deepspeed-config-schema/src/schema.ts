/**
 * The JSON Schema of DeepSpeed's config file, and how to read it. The JSON is bundled into the
 * module (not read from disk) so the package works wherever ajv does: Node, an editor extension,
 * a browser. The same file ships as `@fulgur/deepspeed-config-schema/schema.json` for editors.
 */
import schemaJson from "../schema/deepspeed-config.schema.json";

/** The keywords of JSON Schema 2020-12 this package's schema uses. */
export interface JsonSchema {
  readonly $schema?: string;
  readonly $id?: string;
  readonly $ref?: string;
  readonly $defs?: Readonly<Record<string, JsonSchema>>;
  readonly $comment?: string;
  readonly title?: string;
  readonly description?: string;
  readonly default?: unknown;
  readonly deprecated?: boolean;
  readonly examples?: readonly unknown[];
  readonly type?: string | readonly string[];
  readonly enum?: readonly unknown[];
  readonly const?: unknown;
  readonly minimum?: number;
  readonly maximum?: number;
  readonly exclusiveMinimum?: number;
  readonly exclusiveMaximum?: number;
  readonly minLength?: number;
  readonly pattern?: string;
  readonly items?: JsonSchema;
  readonly minItems?: number;
  readonly maxItems?: number;
  readonly properties?: Readonly<Record<string, JsonSchema>>;
  readonly required?: readonly string[];
  readonly additionalProperties?: boolean | JsonSchema;
  readonly anyOf?: readonly JsonSchema[];
  readonly oneOf?: readonly JsonSchema[];
  readonly allOf?: readonly JsonSchema[];
  readonly if?: JsonSchema;
  readonly then?: JsonSchema;
  readonly else?: JsonSchema;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}

/** The schema (JSON Schema 2020-12), frozen: one copy is shared by every caller and by ajv. */
export const deepspeedConfigSchema: JsonSchema = deepFreeze(schemaJson as JsonSchema);

/** The schema's `$id`, which is also a URL editors can fetch it from once the package is published. */
export const DEEPSPEED_CONFIG_SCHEMA_ID: string = schemaJson.$id;

/** Follows `$ref` (local JSON pointers only, which is all this schema uses) to the schema it names. */
export function deref(schema: JsonSchema, root: JsonSchema = deepspeedConfigSchema): JsonSchema {
  let current = schema;
  for (let hops = 0; current.$ref !== undefined; hops++) {
    if (hops > 32 || !current.$ref.startsWith("#")) throw new Error(`cannot follow $ref ${current.$ref}`);
    current = pointerTarget(root, current.$ref.slice(1));
  }
  return current;
}

function pointerTarget(root: JsonSchema, pointer: string): JsonSchema {
  let node: unknown = root;
  for (const raw of pointer.split("/").slice(1)) {
    const key = decodeURIComponent(raw).replace(/~1/g, "/").replace(/~0/g, "~");
    node = (node as Record<string, unknown> | undefined)?.[key];
  }
  if (typeof node !== "object" || node === null) throw new Error(`$ref #${pointer} names nothing in the schema`);
  return node as JsonSchema;
}
