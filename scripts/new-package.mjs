#!/usr/bin/env node
// Creates the skeleton of a workspace package so every package is built, typed and tested the same way.
// Usage: node scripts/new-package.mjs <name> "<description>" [dep ...]
import { mkdirSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";

const [name, description, ...deps] = process.argv.slice(2);
if (!name || !description) {
  console.error('usage: node scripts/new-package.mjs <name> "<description>" [dep ...]');
  process.exit(2);
}
const dir = join("packages", name);
if (existsSync(dir)) {
  console.error(`${dir} exists already`);
  process.exit(2);
}
for (const sub of ["src", "test"]) mkdirSync(join(dir, sub), { recursive: true });
const pkg = {
  name: `@fulgur/${name}`,
  version: "0.1.0",
  description,
  license: "Apache-2.0",
  type: "module",
  main: "./dist/index.js",
  types: "./dist/index.d.ts",
  exports: { ".": { types: "./dist/index.d.ts", import: "./dist/index.js" }, "./package.json": "./package.json" },
  files: ["dist", "README.md"],
  engines: { node: ">=20.19" },
  scripts: { build: "tsup", typecheck: "tsc --noEmit -p tsconfig.json", test: "vitest run" },
  dependencies: Object.fromEntries(deps.map((d) => [`@fulgur/${d}`, "0.1.0"])),
};
writeFileSync(join(dir, "package.json"), JSON.stringify(pkg, null, 2) + "\n");
writeFileSync(
  join(dir, "tsconfig.json"),
  JSON.stringify({ extends: "../../tsconfig.base.json", include: ["src", "test"] }, null, 2) + "\n",
);
writeFileSync(
  join(dir, "tsup.config.ts"),
  `import { defineConfig } from "tsup";\n\nexport default defineConfig({\n  entry: ["src/index.ts"],\n  format: ["esm"],\n  dts: true,\n  sourcemap: true,\n  clean: true,\n  target: "node20",\n});\n`,
);
writeFileSync(
  join(dir, "vitest.config.ts"),
  `import { defineConfig } from "vitest/config";\n\nexport default defineConfig({\n  test: { include: ["test/**/*.test.ts"], testTimeout: 60_000, hookTimeout: 60_000 },\n});\n`,
);
console.log(`created ${dir}`);
