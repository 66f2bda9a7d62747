/**
 * Where the CUDA C++ kernel sources live at run time. They ship in the package's `kernels/`
 * directory (listed in package.json "files") and are compiled on the user's machine for the user's
 * GPU, so the same package works on every architecture NVRTC supports.
 */
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** One kernel file plus the headers it includes, read from disk. */
export interface KernelSource {
  /** File name without extension, e.g. "attention". */
  readonly name: string;
  readonly source: string;
  /** Header name -> contents (given to NVRTC in memory, found by nvcc with -I). */
  readonly headers: Readonly<Record<string, string>>;
}

/**
 * kernels/ sits one level above this module both in the source tree (src/kernelSource.ts) and in
 * the build (dist/index.js); FULGUR_KERNELS_DIR overrides it (tests, or a patched copy of a kernel).
 */
export function kernelsDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.FULGUR_KERNELS_DIR) return resolve(env.FULGUR_KERNELS_DIR);
  return resolve(dirname(fileURLToPath(import.meta.url)), "..", "kernels");
}

const cache = new Map<string, KernelSource>();

export function kernelSource(name: string, dir = kernelsDir()): KernelSource {
  const key = `${dir}\u0000${name}`;
  const hit = cache.get(key);
  if (hit) return hit;
  let source: string;
  try {
    source = readFileSync(join(dir, `${name}.cu`), "utf8");
  } catch (err) {
    const have = safeList(dir).filter((f) => f.endsWith(".cu"));
    throw new Error(
      `kernel source ${name}.cu not found in ${dir} (${(err as Error).message}); files there: ${have.join(", ") || "(none)"}`,
    );
  }
  const headers: Record<string, string> = {};
  for (const m of source.matchAll(/^#include\s+"([^"]+)"/gm)) {
    headers[m[1]] = readFileSync(join(dir, m[1]), "utf8");
  }
  const ks = Object.freeze({ name, source, headers: Object.freeze(headers) });
  cache.set(key, ks);
  return ks;
}

function safeList(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}
