/**
 * Fulgur's optional packages, found at run time. The CLI depends at build time only on the packages
 * below it; strategies and the CUDA accelerator are imported by name when installed, so the CLI
 * works (and says what is missing) with any subset of them. Specifiers are variables, so the bundler
 * leaves every such import to Node.
 */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export type ImportOutcome =
  | { readonly status: "loaded"; readonly module: Record<string, unknown> }
  /** `missing`: not installed; `unbuilt`: installed but its entry file is absent; `failed`: it threw while loading. */
  | { readonly status: "missing" | "unbuilt" | "failed"; readonly reason: string };

/** Imports a package by name, telling "not installed" apart from "installed but broken". */
export async function tryImport(specifier: string): Promise<ImportOutcome> {
  try {
    const module = (await import(specifier)) as Record<string, unknown>;
    return { status: "loaded", module };
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const notFound = e?.code === "ERR_MODULE_NOT_FOUND" || e?.code === "MODULE_NOT_FOUND";
    const message = String(e?.message ?? err).split("\n")[0];
    if (notFound && message.includes(`Cannot find package '${specifier}'`)) {
      return { status: "missing", reason: `not installed (npm install ${specifier})` };
    }
    if (notFound && message.includes(`/node_modules/${specifier}/`)) {
      return { status: "unbuilt", reason: `installed but not built: ${message}` };
    }
    return { status: "failed", reason: `failed to load: ${message}` };
  }
}

/** Every Fulgur package `fulgur env` reports, in dependency order. */
export const FULGUR_PACKAGES = [
  "@fulgur/tensor",
  "@fulgur/nn",
  "@fulgur/core",
  "@fulgur/distributed",
  "@fulgur/checkpoint-io",
  "@fulgur/accelerator-cuda",
  "@fulgur/trainer",
  "@fulgur/strategy-ddp",
  "@fulgur/strategy-fsdp",
  "@fulgur/strategy-zero",
  "@fulgur/strategy-pipeline",
  "@fulgur/cli",
] as const;

const here = dirname(fileURLToPath(import.meta.url));

/** The nearest package.json above this file: the CLI's own (src/ and dist/ both sit one level down). */
function ownPackageJson(): { name: string; version: string } {
  for (let dir = here; ; dir = dirname(dir)) {
    const p = join(dir, "package.json");
    if (existsSync(p)) {
      const pkg = JSON.parse(readFileSync(p, "utf8")) as { name: string; version: string };
      if (pkg.name === "@fulgur/cli") return pkg;
    }
    if (dirname(dir) === dir) return { name: "@fulgur/cli", version: "0.0.0" };
  }
}

export const CLI_VERSION: string = ownPackageJson().version;

/**
 * A package's installed version, or null. Read from node_modules directly rather than through
 * `require.resolve`, which fails on packages whose `exports` hide package.json or whose entry is unbuilt.
 */
export function installedVersion(name: string): string | null {
  if (name === "@fulgur/cli") return CLI_VERSION;
  for (let dir = here; ; dir = dirname(dir)) {
    const p = join(dir, "node_modules", name, "package.json");
    if (existsSync(p)) {
      try {
        return String((JSON.parse(readFileSync(p, "utf8")) as { version?: unknown }).version ?? "unknown");
      } catch {
        return "unknown";
      }
    }
    if (dirname(dir) === dir) return null;
  }
}
