/** The schema file itself: valid 2020-12, compilable in ajv's strict mode, and shipped as package.json says. */
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import Ajv2020 from "ajv/dist/2020.js";
import { describe, expect, it } from "vitest";
import { DEEPSPEED_CONFIG_SCHEMA_ID, deepspeedConfigSchema } from "../src/index.js";

const PACKAGE = join(import.meta.dirname, "..");
const packageJson = JSON.parse(readFileSync(join(PACKAGE, "package.json"), "utf8")) as {
  files: string[];
  exports: Record<string, string | Record<string, string>>;
  dependencies: Record<string, string>;
};

describe("the schema", () => {
  it("is a valid JSON Schema 2020-12 document", () => {
    const ajv = new Ajv2020();
    expect(deepspeedConfigSchema.$schema).toBe("https://json-schema.org/draft/2020-12/schema");
    expect(ajv.validateSchema(deepspeedConfigSchema as object)).toBe(true);
  });

  it("compiles under ajv's strict mode", () => {
    const ajv = new Ajv2020({ strict: true, strictRequired: false, allowUnionTypes: true });
    expect(() => ajv.compile(deepspeedConfigSchema)).not.toThrow();
  });

  it("is the file the package ships as ./schema.json", () => {
    expect(packageJson.exports["./schema.json"]).toBe("./schema/deepspeed-config.schema.json");
    expect(packageJson.files).toContain("schema");
    const onDisk = JSON.parse(readFileSync(join(PACKAGE, "schema", "deepspeed-config.schema.json"), "utf8"));
    expect(deepspeedConfigSchema).toEqual(onDisk);
    expect(DEEPSPEED_CONFIG_SCHEMA_ID).toBe(onDisk.$id);
  });

  it("is frozen, so no caller can change what others validate against", () => {
    expect(Object.isFrozen(deepspeedConfigSchema)).toBe(true);
    expect(Object.isFrozen(deepspeedConfigSchema.properties)).toBe(true);
  });

  it("describes every top-level key", () => {
    const undescribed = Object.entries(deepspeedConfigSchema.properties ?? {})
      .filter(([, schema]) => schema.description === undefined && schema.$ref === undefined)
      .map(([key]) => key);
    expect(undescribed).toEqual([]);
  });

  it("says why each open block is open", () => {
    const open = ["optimizer", "scheduler", "quantizeTraining", "weightQuantizationGroups", "activationQuantizationGroups", "pruningGroups"];
    for (const name of open) expect(deepspeedConfigSchema.$defs?.[name]?.$comment, name).toBeTypeOf("string");
  });

  it("depends on ajv alone", () => {
    expect(Object.keys(packageJson.dependencies)).toEqual(["ajv"]);
  });
});

// The built bundle, run by Node's own ESM loader in a child process (vitest would transform it
// itself), is where ajv's CommonJS default export meets native ESM.
describe.skipIf(!existsSync(join(PACKAGE, "dist", "index.js")))("the built package", () => {
  it("validates under Node's ESM loader", () => {
    const script = `
      const { validate } = await import(${JSON.stringify(pathToFileURL(join(PACKAGE, "dist", "index.js")).href)});
      const ok = validate({ zero_optimization: { stage: 2 } }).valid;
      const typo = validate({ zero_optimization: { stgae: 2 } }).problems[0]?.suggestion;
      process.stdout.write(JSON.stringify({ ok, typo }));`;
    const output = execFileSync(process.execPath, ["--input-type=module", "-e", script], { encoding: "utf8" });
    expect(JSON.parse(output)).toEqual({ ok: true, typo: "zero_optimization.stage" });
  });
});
