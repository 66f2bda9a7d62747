/** The README's example is real: its config, validated at world size 8, prints what the README shows. */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { expect, it } from "vitest";
import { formatProblems, validate } from "../src/index.js";

it("the README's example prints what the README says", () => {
  const readme = readFileSync(join(import.meta.dirname, "..", "README.md"), "utf8");
  const config = /Given this `ds_config\.json`:\n\n```json\n([\s\S]*?)\n```/.exec(readme)?.[1];
  const shown = /prints:\n\n```text\n([\s\S]*?)\n```/.exec(readme)?.[1];
  expect(config).toBeDefined();
  const { problems } = validate(JSON.parse(config!), { worldSize: 8 });
  expect(formatProblems(problems, { heading: `ds_config.json: ${problems.length} problems` })).toBe(shown);
});
