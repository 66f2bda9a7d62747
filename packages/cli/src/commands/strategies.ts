/**
 * `fulgur strategies`: what the registries hold once every installed Fulgur plugin package has been
 * imported (importing a plugin package registers its names), and which names would come with a
 * package that is not installed. Third-party plugins registered by the user's own code do not
 * show here: they register when that code runs.
 */
import { Command } from "commander";
import { AcceleratorRegistry, KNOWN_ACCELERATOR_PACKAGES, KNOWN_STRATEGY_PACKAGES, StrategyRegistry } from "@fulgur/core";
import { registerBuiltins } from "@fulgur/trainer";
import type { CliContext } from "../context";
import { table } from "../format";
import { tryImport } from "../packages";

export interface PluginRow {
  readonly name: string;
  readonly package: string | null;
  readonly description: string;
}

export interface AcceleratorRow extends PluginRow {
  /** Whether a usable device was found; null when asking threw (see `problem`). */
  readonly available: boolean | null;
  /** Devices on this machine; null when unbounded (the CPU serves any number of processes) or unknown. */
  readonly deviceCount: number | null;
  readonly problem?: string;
}

export interface UnloadedPackage {
  readonly package: string;
  readonly kind: "strategy" | "accelerator";
  /** The names the package would register. */
  readonly names: string[];
  readonly status: "missing" | "unbuilt" | "failed";
  readonly reason: string;
}

export interface PluginsReport {
  readonly strategies: PluginRow[];
  readonly accelerators: AcceleratorRow[];
  readonly unloaded: UnloadedPackage[];
}

function packagesOf(table: Readonly<Record<string, string>>): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const [name, pkg] of Object.entries(table)) out.set(pkg, [...(out.get(pkg) ?? []), name]);
  return out;
}

/** Imports every known plugin package that is installed, then reads both registries. */
export async function collectPlugins(): Promise<PluginsReport> {
  registerBuiltins();
  const unloaded: UnloadedPackage[] = [];
  const kinds = [
    ["strategy", packagesOf(KNOWN_STRATEGY_PACKAGES)],
    ["accelerator", packagesOf(KNOWN_ACCELERATOR_PACKAGES)],
  ] as const;
  for (const [kind, packages] of kinds) {
    for (const [pkg, names] of packages) {
      const outcome = await tryImport(pkg);
      if (outcome.status !== "loaded") unloaded.push({ package: pkg, kind, names, status: outcome.status, reason: outcome.reason });
    }
  }
  const strategies = StrategyRegistry.list().map((e) => ({ name: e.name, package: e.package ?? null, description: e.description }));
  const accelerators = AcceleratorRegistry.list().map((e): AcceleratorRow => {
    const row = { name: e.name, package: e.package ?? null, description: e.description };
    try {
      const acc = AcceleratorRegistry.create(e.name);
      const available = acc.isAvailable();
      const count = available ? acc.deviceCount() : 0;
      return { ...row, available, deviceCount: count >= Number.MAX_SAFE_INTEGER ? null : count };
    } catch (err) {
      return { ...row, available: null, deviceCount: null, problem: (err as Error).message };
    }
  });
  return { strategies, accelerators, unloaded };
}

function status(a: AcceleratorRow): string {
  if (a.available === null) return `unknown: ${a.problem}`;
  if (!a.available) return "no device found";
  return a.deviceCount === null ? "available" : `available, ${a.deviceCount} device${a.deviceCount === 1 ? "" : "s"}`;
}

export function renderPlugins(r: PluginsReport): string {
  let out = "Strategies\n";
  out += table([["NAME", "PACKAGE", "DESCRIPTION"], ...r.strategies.map((s) => [s.name, s.package ?? "-", s.description])]);
  out += "\nAccelerators\n";
  out += table([["NAME", "PACKAGE", "STATUS", "DESCRIPTION"], ...r.accelerators.map((a) => [a.name, a.package ?? "-", status(a), a.description])]);
  const missing = r.unloaded.filter((u) => u.status === "missing");
  if (missing.length) {
    out += "\nAvailable to install\n";
    out += table(missing.map((u) => [`npm install ${u.package}`, `${u.kind}: ${u.names.join(", ")}`]));
  }
  const broken = r.unloaded.filter((u) => u.status !== "missing");
  if (broken.length) {
    out += "\nInstalled but not loadable\n";
    for (const u of broken) out += `  ${u.package} (${u.kind}: ${u.names.join(", ")})\n    ${u.reason}\n`;
  }
  return out;
}

export function strategiesCommand(ctx: CliContext): Command {
  return new Command("strategies")
    .description("list registered strategies and accelerators, and the plugin packages that are not installed")
    .option("--json", "machine-readable output")
    .addHelpText("after", "\nExamples:\n  $ fulgur strategies\n  $ fulgur strategies --json")
    .action(async (opts: { json?: boolean }) => {
      const report = await collectPlugins();
      ctx.io.out(opts.json ? JSON.stringify(report) + "\n" : renderPlugins(report));
    });
}
