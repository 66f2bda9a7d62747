/**
 * What `fulgur env` prints about CUDA: the GPUs, the driver and library versions, and where each
 * library was found or why it was not. Building the report never throws: a missing library or
 * driver is itself the information the user needs.
 */
import { check } from "./check";
import { deviceCount, deviceProperties } from "./device";
import { cudart } from "./ffi/cudart";
import { cublasLt } from "./ffi/cublasLt";
import { LIBRARY_NAMES, SONAMES, probeLibrary } from "./ffi/libraries";
import { nccl } from "./ffi/nccl";
import { nvrtcVersion } from "./nvrtc";
import { formatBytes } from "./format";

export interface GpuReport {
  readonly index: number;
  readonly name: string;
  /** "9.0" */
  readonly computeCapability: string;
  readonly totalMemory: number;
}

export type LibraryReport = { readonly path: string } | { readonly error: string };

export interface CudaEnvironmentReport {
  readonly gpus: readonly GpuReport[];
  readonly driverVersion: string | null;
  readonly runtimeVersion: string | null;
  readonly cublasLtVersion: string | null;
  readonly ncclVersion: string | null;
  readonly nvrtcVersion: string | null;
  /** By soname: where it was loaded from, or why not. */
  readonly libraries: Readonly<Record<string, LibraryReport>>;
  /** Problems met while asking (a library present but failing, no GPU visible). */
  readonly problems: readonly string[];
}

/** 13000 -> "13.0" (CUDA encodes major * 1000 + minor * 10). */
export function formatCudaVersion(v: number): string {
  return `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 10)}`;
}

/** 130001 -> "13.0.1" (cuBLAS encodes major * 10000 + minor * 100 + patch). */
export function formatCublasVersion(v: number): string {
  return `${Math.floor(v / 10000)}.${Math.floor((v % 10000) / 100)}.${v % 100}`;
}

/** 22803 -> "2.28.3" (NCCL >= 2.9 encodes major * 10000 + minor * 100 + patch). */
export function formatNcclVersion(v: number): string {
  return v >= 10000 ? `${Math.floor(v / 10000)}.${Math.floor((v % 10000) / 100)}.${v % 100}` : `${Math.floor(v / 1000)}.${Math.floor((v % 1000) / 100)}.${v % 100}`;
}

function attempt<T>(problems: string[], what: string, fn: () => T): T | null {
  try {
    return fn();
  } catch (err) {
    problems.push(`${what}: ${(err as Error).message}`);
    return null;
  }
}

export function cudaEnvironmentReport(env: NodeJS.ProcessEnv = process.env): CudaEnvironmentReport {
  const problems: string[] = [];
  const libraries: Record<string, LibraryReport> = {};
  const ok: Record<string, boolean> = {};
  for (const name of LIBRARY_NAMES) {
    const p = probeLibrary(name, env);
    libraries[SONAMES[name]] = p.ok ? { path: p.path } : { error: p.error };
    ok[name] = p.ok;
  }
  const intOut = (fn: (o: [number]) => number, call: string, api: "cudart" | "nccl") => {
    const o: [number] = [0];
    check(fn(o), call, api);
    return o[0];
  };
  const driverVersion = ok.cudart ? attempt(problems, "driver version", () => formatCudaVersion(intOut((o) => cudart().cudaDriverGetVersion(o), "cudaDriverGetVersion", "cudart"))) : null;
  const runtimeVersion = ok.cudart ? attempt(problems, "runtime version", () => formatCudaVersion(intOut((o) => cudart().cudaRuntimeGetVersion(o), "cudaRuntimeGetVersion", "cudart"))) : null;
  const cublasLtVersion = ok.cublasLt ? attempt(problems, "cuBLASLt version", () => formatCublasVersion(Number(cublasLt().cublasLtGetVersion()))) : null;
  const ncclVersion = ok.nccl ? attempt(problems, "NCCL version", () => formatNcclVersion(intOut((o) => nccl().ncclGetVersion(o), "ncclGetVersion", "nccl"))) : null;
  const nvrtc = ok.nvrtc ? attempt(problems, "NVRTC version", () => nvrtcVersion()) : null;
  const gpus: GpuReport[] = [];
  if (ok.cudart && ok.cuda) {
    const n = attempt(problems, "device count", () => deviceCount()) ?? 0;
    if (n === 0) problems.push("no CUDA device is visible" + (env.CUDA_VISIBLE_DEVICES !== undefined ? ` (CUDA_VISIBLE_DEVICES=${env.CUDA_VISIBLE_DEVICES})` : ""));
    for (let i = 0; i < n; i++) {
      const p = attempt(problems, `device ${i}`, () => deviceProperties(i));
      if (p) gpus.push({ index: i, name: p.name, computeCapability: `${p.computeCapability[0]}.${p.computeCapability[1]}`, totalMemory: p.totalMemory });
    }
  }
  return { gpus, driverVersion, runtimeVersion, cublasLtVersion, ncclVersion, nvrtcVersion: nvrtc, libraries, problems };
}

/** The report as the lines `fulgur env` prints. */
export function formatEnvironmentReport(r: CudaEnvironmentReport): string {
  const v = (s: string | null) => s ?? "not available";
  const lines = [
    "CUDA",
    `  driver:   ${v(r.driverVersion)}`,
    `  runtime:  ${v(r.runtimeVersion)}`,
    `  cuBLASLt: ${v(r.cublasLtVersion)}`,
    `  NCCL:     ${v(r.ncclVersion)}`,
    `  NVRTC:    ${v(r.nvrtcVersion)}`,
    `  GPUs:     ${r.gpus.length === 0 ? "none found" : r.gpus.length}`,
  ];
  for (const g of r.gpus) lines.push(`    cuda:${g.index}  ${g.name}  sm_${g.computeCapability.replace(".", "")}  ${formatBytes(g.totalMemory)}`);
  lines.push("  libraries:");
  for (const [name, lib] of Object.entries(r.libraries)) lines.push(`    ${name}: ${"path" in lib ? lib.path : `missing: ${lib.error}`}`);
  if (r.problems.length > 0) {
    lines.push("  problems:");
    for (const p of r.problems) lines.push(`    ${p}`);
  }
  return lines.join("\n");
}
