/**
 * `fulgur env`: what a bug report needs: Node, the machine, the versions of every Fulgur package
 * installed, and what the CUDA accelerator found (GPUs, driver and library versions, the libraries
 * it could not load). CUDA comes from `cudaEnvironmentReport()` of @fulgur/accelerator-cuda when
 * that package can be imported; its absence is reported, never thrown.
 */
import { cpus, freemem, totalmem } from "node:os";
import { Command } from "commander";
import type { CliContext } from "../context";
import { formatBytes, table } from "../format";
import { FULGUR_PACKAGES, installedVersion, tryImport } from "../packages";

const CUDA_PACKAGE = "@fulgur/accelerator-cuda";

export type CudaSection =
  | { readonly status: "ok"; readonly package: string; readonly version: string | null; readonly report: unknown }
  | { readonly status: "missing" | "unbuilt" | "failed" | "no-report" | "report-failed"; readonly package: string; readonly message: string };

export interface EnvReport {
  readonly node: { readonly version: string; readonly platform: string; readonly arch: string };
  readonly cpu: { readonly count: number; readonly model: string };
  readonly memory: { readonly totalBytes: number; readonly freeBytes: number };
  readonly packages: Record<string, string | null>;
  readonly cuda: CudaSection;
}

async function cudaSection(): Promise<CudaSection> {
  const imported = await tryImport(CUDA_PACKAGE);
  if (imported.status !== "loaded") {
    const message = imported.status === "missing" ? `${CUDA_PACKAGE} not installed` : `${CUDA_PACKAGE} ${imported.reason}`;
    return { status: imported.status, package: CUDA_PACKAGE, message };
  }
  const fn = imported.module.cudaEnvironmentReport;
  if (typeof fn !== "function") {
    return { status: "no-report", package: CUDA_PACKAGE, message: `${CUDA_PACKAGE} ${installedVersion(CUDA_PACKAGE) ?? ""} does not export cudaEnvironmentReport()` };
  }
  try {
    const report: unknown = await (fn as () => unknown)();
    return { status: "ok", package: CUDA_PACKAGE, version: installedVersion(CUDA_PACKAGE), report };
  } catch (err) {
    return { status: "report-failed", package: CUDA_PACKAGE, message: `cudaEnvironmentReport() failed: ${(err as Error).message}` };
  }
}

export async function collectEnv(): Promise<EnvReport> {
  const cpuList = cpus();
  return {
    node: { version: process.version, platform: process.platform, arch: process.arch },
    cpu: { count: cpuList.length, model: cpuList[0]?.model.trim() ?? "unknown" },
    memory: { totalBytes: totalmem(), freeBytes: freemem() },
    packages: Object.fromEntries(FULGUR_PACKAGES.map((p) => [p, installedVersion(p)])),
    cuda: await cudaSection(),
  };
}

/** Keys whose numbers are byte counts, shown as KiB/MiB/GiB. */
const BYTES_KEY = /(bytes|memory|mem)$/i;

/**
 * Renders the CUDA report whatever its exact shape: scalars as `key: value`, objects and arrays
 * nested and indented, byte counts in binary units. The report belongs to the CUDA package, so the
 * CLI shows every field it gives rather than a fixed selection that would go stale.
 */
export function renderTree(value: unknown, indent = "  ", key = ""): string {
  if (value === null || value === undefined) return "-";
  if (typeof value === "number" && BYTES_KEY.test(key) && value >= 1024) return `${formatBytes(value)} (${value} bytes)`;
  if (typeof value !== "object") return String(value);
  const lines: string[] = [];
  if (Array.isArray(value)) {
    if (value.length === 0) return "(none)";
    if (value.every((v) => v === null || typeof v !== "object")) return value.map(String).join(", ");
    value.forEach((item, i) => {
      const body = renderTree(item, indent + "  ", key);
      lines.push(`${indent}[${i}]${body.startsWith("\n") ? body : ` ${body}`}`);
    });
  } else {
    const entries = Object.entries(value as Record<string, unknown>);
    if (entries.length === 0) return "(none)";
    for (const [k, v] of entries) {
      const body = renderTree(v, indent + "  ", k);
      lines.push(`${indent}${k}:${body.startsWith("\n") ? body : ` ${body}`}`);
    }
  }
  return "\n" + lines.join("\n");
}

/** The fields of @fulgur/accelerator-cuda's CudaEnvironmentReport this CLI knows how to lay out. */
interface KnownCudaReport {
  gpus: { index?: number; name?: string; computeCapability?: string; totalMemory?: number }[];
  driverVersion?: string | null;
  runtimeVersion?: string | null;
  cublasLtVersion?: string | null;
  ncclVersion?: string | null;
  nvrtcVersion?: string | null;
  libraries?: Record<string, { path?: string; error?: string }>;
  problems?: string[];
}

function isKnownReport(r: unknown): r is KnownCudaReport {
  return r !== null && typeof r === "object" && Array.isArray((r as KnownCudaReport).gpus);
}

/** The CUDA report laid out as the rest of `fulgur env`; fields this CLI does not know are shown as a tree after them. */
export function renderCudaReport(report: unknown): string {
  if (!isKnownReport(report)) return renderTree(report).replace(/^\n/, "") + "\n";
  const v = (s: string | null | undefined) => s ?? "not available";
  let out = table([
    ["driver", v(report.driverVersion)],
    ["runtime", v(report.runtimeVersion)],
    ["cuBLASLt", v(report.cublasLtVersion)],
    ["NCCL", v(report.ncclVersion)],
    ["NVRTC", v(report.nvrtcVersion)],
    ["GPUs", report.gpus.length === 0 ? "none found" : String(report.gpus.length)],
  ]);
  out += table(
    report.gpus.map((g, i) => [
      `cuda:${g.index ?? i}`,
      g.name ?? "?",
      `compute capability ${g.computeCapability ?? "?"}`,
      typeof g.totalMemory === "number" ? formatBytes(g.totalMemory) : "?",
    ]),
    "    ",
  );
  const libs = Object.entries(report.libraries ?? {});
  if (libs.length) {
    out += "  libraries\n";
    out += table(libs.map(([name, lib]) => [name, lib.path !== undefined ? `found: ${lib.path}` : `not found: ${lib.error ?? "?"}`]), "    ");
  }
  if (report.problems?.length) out += "  problems\n" + report.problems.map((p) => `    ${p}\n`).join("");
  const known = new Set(["gpus", "driverVersion", "runtimeVersion", "cublasLtVersion", "ncclVersion", "nvrtcVersion", "libraries", "problems"]);
  const rest = Object.fromEntries(Object.entries(report).filter(([k]) => !known.has(k)));
  if (Object.keys(rest).length) out += renderTree(rest).slice(1) + "\n";
  return out;
}

export function renderEnv(r: EnvReport): string {
  let out = "Fulgur environment\n";
  out += table([
    ["node", `${r.node.version} (${r.node.platform} ${r.node.arch})`],
    ["cpus", `${r.cpu.count} x ${r.cpu.model}`],
    ["memory", `${formatBytes(r.memory.totalBytes)} total, ${formatBytes(r.memory.freeBytes)} free`],
  ]);
  out += "\nPackages\n";
  out += table(Object.entries(r.packages).map(([p, v]) => [p, v ?? "not installed"]));
  if (r.cuda.status === "ok") {
    out += `\nCUDA (${r.cuda.package} ${r.cuda.version ?? ""})`.trimEnd() + "\n";
    out += renderCudaReport(r.cuda.report);
  } else {
    out += `\nCUDA: ${r.cuda.message}\n`;
  }
  return out;
}

export function envCommand(ctx: CliContext): Command {
  return new Command("env")
    .description("show Node, the machine, Fulgur package versions and what CUDA support found")
    .option("--json", "machine-readable output")
    .addHelpText("after", "\nExamples:\n  $ fulgur env\n  $ fulgur env --json > env.json")
    .action(async (opts: { json?: boolean }) => {
      const report = await collectEnv();
      ctx.io.out(opts.json ? JSON.stringify(report) + "\n" : renderEnv(report));
    });
}
