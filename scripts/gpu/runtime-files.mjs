#!/usr/bin/env node
// Lists, one path a line, what a GPU machine with Node but no registry needs to run the built
// packages and their tests: every workspace package's dist, the workspace links in node_modules,
// and the installed third-party packages they load (plus vitest and tsx), with their dependencies.
import { existsSync, lstatSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";

const root = process.cwd();
const out = new Set();
const seen = new Set();

function pkgJson(dir) {
  return JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
}

function walk(name) {
  if (seen.has(name)) return;
  seen.add(name);
  const dir = join("node_modules", name);
  if (!existsSync(join(root, dir, "package.json"))) return;
  out.add(dir);
  if (lstatSync(join(root, dir)).isSymbolicLink()) return;
  const p = pkgJson(join(root, dir));
  for (const d of Object.keys({ ...p.dependencies, ...p.optionalDependencies, ...p.peerDependencies })) walk(d);
}

for (const group of ["packages", "examples"]) {
  for (const name of readdirSync(join(root, group))) {
    const dir = join(group, name);
    if (!existsSync(join(root, dir, "package.json"))) continue;
    const p = pkgJson(join(root, dir));
    if (existsSync(join(root, dir, "dist"))) out.add(join(dir, "dist"));
    // Versions that differ from the hoisted ones are installed inside the package (cli's commander 14).
    const nested = join(dir, "node_modules");
    if (existsSync(join(root, nested))) {
      for (const entry of readdirSync(join(root, nested))) {
        if (entry.startsWith(".")) continue;
        out.add(join(nested, entry));
        const inner = join(root, nested, entry, "package.json");
        if (existsSync(inner)) {
          const q = JSON.parse(readFileSync(inner, "utf8"));
          for (const d of Object.keys({ ...q.dependencies, ...q.optionalDependencies })) walk(d);
        }
      }
    }
    out.add(join("node_modules", p.name));
    for (const d of Object.keys({ ...p.dependencies, ...p.devDependencies, ...p.peerDependencies })) walk(d);
  }
}
for (const extra of ["vitest", "tsx", "koffi", "@koromix/koffi-linux-x64"]) walk(extra);
for (const p of [...out].sort()) if (!p.startsWith("node_modules/typescript") && !p.startsWith("node_modules/@types")) console.log(p);
