/**
 * The on-disk cache of compiled kernels (DESIGN.md, decision 4). Compiling a kernel file with NVRTC
 * takes seconds; the CUBIN is kept under `$XDG_CACHE_HOME/fulgur/kernels` (default
 * `~/.cache/fulgur/kernels`, override with FULGUR_KERNEL_CACHE), keyed by the SHA-256 of everything
 * that determines the binary: the source, its headers, the architecture, the compiler version and the
 * options. A changed kernel, GPU or CUDA version therefore misses the cache instead of loading a
 * stale binary. Writes go to a unique temporary name and are renamed into place, so concurrent ranks
 * compiling the same kernel never see half a file.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import type { KernelSource } from "./kernelSource";

export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.FULGUR_KERNEL_CACHE) return env.FULGUR_KERNEL_CACHE;
  const base = env.XDG_CACHE_HOME && env.XDG_CACHE_HOME.length > 0 ? env.XDG_CACHE_HOME : join(homedir(), ".cache");
  return join(base, "fulgur", "kernels");
}

/** What produced a CUBIN: compiled by `compile` for `arch`, identified by `compilerVersion` and `options`. */
export interface CompileRequest {
  readonly source: KernelSource;
  readonly arch: string;
  readonly compilerVersion: string;
  readonly options: readonly string[];
}

export function cacheKey(req: CompileRequest): string {
  const h = createHash("sha256");
  const part = (s: string) => {
    h.update(String(s.length));
    h.update(":");
    h.update(s);
  };
  part(req.source.name);
  part(req.source.source);
  for (const name of Object.keys(req.source.headers).sort()) {
    part(name);
    part(req.source.headers[name]);
  }
  part(req.arch);
  part(req.compilerVersion);
  for (const o of req.options) part(o);
  return h.digest("hex");
}

export interface CacheResult {
  readonly cubin: Uint8Array;
  readonly path: string;
  readonly hit: boolean;
}

export class KernelCache {
  constructor(readonly dir: string = defaultCacheDir()) {}

  pathFor(req: CompileRequest): string {
    return join(this.dir, `${req.source.name}-${req.arch}-${cacheKey(req).slice(0, 32)}.cubin`);
  }

  /** The cached CUBIN for `req`, or `compile()`'s result, stored for next time. */
  get(req: CompileRequest, compile: () => Uint8Array): CacheResult {
    const path = this.pathFor(req);
    try {
      const bytes = readFileSync(path);
      if (bytes.length > 0) return { cubin: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length), path, hit: true };
    } catch {
      // Not cached yet (or unreadable): compile below.
    }
    const cubin = compile();
    this.store(path, cubin);
    return { cubin, path, hit: false };
  }

  /** Atomic write: a unique temporary file in the same directory, then rename over the final name. */
  private store(path: string, cubin: Uint8Array): void {
    const tmp = `${path}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
    try {
      mkdirSync(this.dir, { recursive: true });
      writeFileSync(tmp, cubin);
      renameSync(tmp, path);
    } catch (err) {
      rmSync(tmp, { force: true });
      // A read-only or full cache directory must not stop training: the kernel is compiled and
      // usable, it just will be compiled again next time. Say so once.
      if (!warned.has(this.dir)) {
        warned.add(this.dir);
        process.emitWarning(`fulgur: cannot write the kernel cache in ${this.dir} (${(err as Error).message}); kernels will be recompiled in each process`);
      }
    }
  }
}

const warned = new Set<string>();
