/**
 * FULGUR_CUDA_TRACE=<file>: every kernel launch and cuBLASLt call of the process, in order, with the
 * JavaScript frames that asked for it, written as JSON lines to <file> when the process exits. A
 * profiler (ncu, nsys) lists the same launches in the same order with their times; pairing the two
 * says which op each kernel's time belongs to. Off unless the variable is set: a launch then pays
 * one null check.
 */
import { writeFileSync } from "node:fs";

export interface TraceEntry {
  readonly kernel: string;
  readonly grid: readonly number[];
  readonly block: readonly number[];
  /** Innermost frames first, outside this package's launch plumbing. */
  readonly frames: readonly string[];
}

const FRAMES = 14;

function start(path: string | undefined): TraceEntry[] | null {
  if (!path) return null;
  const entries: TraceEntry[] = [];
  process.on("exit", () => {
    writeFileSync(path, entries.map((e) => JSON.stringify(e)).join("\n") + "\n");
  });
  return entries;
}

const entries = start(process.env.FULGUR_CUDA_TRACE);

function frames(): string[] {
  const prev = Error.stackTraceLimit;
  Error.stackTraceLimit = FRAMES + 4;
  const stack = new Error().stack ?? "";
  Error.stackTraceLimit = prev;
  return stack
    .split("\n")
    .slice(1)
    .map((l) => l.trim().replace(/^at /, ""))
    .filter((l) => !/launchTrace|KernelModule\.launch/.test(l))
    .slice(0, FRAMES);
}

/** Records one launch when tracing is on. */
export function traceLaunch(kernel: string, grid: readonly number[], block: readonly number[]): void {
  if (entries === null) return;
  entries.push({ kernel, grid, block, frames: frames() });
}
