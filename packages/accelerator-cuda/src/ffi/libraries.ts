/**
 * Finding and loading the NVIDIA shared libraries, lazily: nothing is opened until a binding is
 * first used, so importing this package on a machine without a GPU costs nothing and fails nowhere.
 *
 * Each library is looked up by its soname through the dynamic linker (LD_LIBRARY_PATH, ldconfig),
 * or, when FULGUR_CUDA_LIB_DIR is set, exactly at `${FULGUR_CUDA_LIB_DIR}/<soname>` and nowhere
 * else: an explicit override that silently fell back to another copy would hide the mismatch it was
 * set to fix. A library that cannot be loaded raises `CudaLibraryError` naming the file looked for,
 * the override, and how to provide it.
 */
import { readFileSync } from "node:fs";
import { basename, join } from "node:path";
import koffi from "koffi";
import type { LibraryHandle } from "koffi";

export type LibraryName = "cudart" | "cuda" | "cublasLt" | "nccl" | "nvrtc";

export const LIBRARY_NAMES: readonly LibraryName[] = ["cudart", "cuda", "cublasLt", "nccl", "nvrtc"];

/** The sonames Fulgur is built against: CUDA 13, cuBLAS 13, NCCL 2, the driver's libcuda.so.1. */
export const SONAMES: Readonly<Record<LibraryName, string>> = {
  cudart: "libcudart.so.13",
  cuda: "libcuda.so.1",
  cublasLt: "libcublasLt.so.13",
  nccl: "libnccl.so.2",
  nvrtc: "libnvrtc.so.13",
};

const PROVIDERS: Readonly<Record<LibraryName, string>> = {
  cudart: "the CUDA 13 runtime (libcudart, in the CUDA toolkit or the cuda-cudart-13-0 package)",
  cuda: "the NVIDIA driver (libcuda.so.1 ships with the driver, not with the toolkit)",
  cublasLt: "cuBLAS 13 (libcublasLt, in the CUDA toolkit or the libcublas-13-0 package)",
  nccl: "NCCL 2 (the libnccl2 package or NVIDIA's NCCL tarball)",
  nvrtc: "NVRTC 13 (libnvrtc, in the CUDA toolkit or the cuda-nvrtc-13-0 package)",
};

export const LIB_DIR_ENV = "FULGUR_CUDA_LIB_DIR";

export class CudaLibraryError extends Error {
  constructor(
    message: string,
    readonly library: LibraryName,
    /** What was passed to the loader: a soname or an absolute path. */
    readonly lookedFor: string,
  ) {
    super(message);
    this.name = "CudaLibraryError";
  }
}

/** Where `name` will be loaded from under the current environment. */
export function libraryPath(name: LibraryName, env: NodeJS.ProcessEnv = process.env): string {
  const dir = env[LIB_DIR_ENV];
  return dir ? join(dir, SONAMES[name]) : SONAMES[name];
}

function loadError(name: LibraryName, path: string, cause: unknown, env: NodeJS.ProcessEnv): CudaLibraryError {
  const dir = env[LIB_DIR_ENV];
  const reason = cause instanceof Error ? cause.message : String(cause);
  const where = dir
    ? `looked for ${path} (${LIB_DIR_ENV}=${dir} makes that the only place looked)`
    : `looked for ${SONAMES[name]} through the dynamic linker's search path (LD_LIBRARY_PATH, /etc/ld.so.conf); ${LIB_DIR_ENV} is not set`;
  return new CudaLibraryError(
    `cannot load ${SONAMES[name]}: ${where}. The loader said: ${reason}. ` +
      `To provide it, install ${PROVIDERS[name]} and add its directory to LD_LIBRARY_PATH, ` +
      `or set ${LIB_DIR_ENV} to the directory that holds ${SONAMES[name]}.`,
    name,
    path,
  );
}

const loaded = new Map<LibraryName, LibraryHandle>();

/** The library, loaded on first call and cached; throws CudaLibraryError when it cannot be loaded. */
export function loadLibrary(name: LibraryName, env: NodeJS.ProcessEnv = process.env): LibraryHandle {
  const cached = loaded.get(name);
  if (cached) return cached;
  const path = libraryPath(name, env);
  let lib: LibraryHandle;
  try {
    lib = koffi.load(path);
  } catch (err) {
    throw loadError(name, path, err, env);
  }
  loaded.set(name, lib);
  return lib;
}

export type LibraryProbe = { readonly ok: true; readonly path: string } | { readonly ok: false; readonly error: string };

/**
 * The file a loaded library actually came from (the dynamic linker resolved the soname through its
 * search path), read from /proc/self/maps; the soname itself where that is not available.
 */
export function resolvedPath(name: LibraryName): string {
  const soname = SONAMES[name];
  try {
    for (const line of readFileSync("/proc/self/maps", "utf8").split("\n")) {
      const i = line.indexOf("/");
      if (i < 0) continue;
      const path = line.slice(i).trim();
      if (basename(path).startsWith(soname)) return path;
    }
  } catch {
    // Not Linux, or /proc not mounted: the soname is the best answer there is.
  }
  return soname;
}

/** Loads `name` if it can and says what happened; never throws (for `fulgur env` and isAvailable). */
export function probeLibrary(name: LibraryName, env: NodeJS.ProcessEnv = process.env): LibraryProbe {
  try {
    loadLibrary(name, env);
    return { ok: true, path: resolvedPath(name) };
  } catch (err) {
    return { ok: false, error: (err as Error).message };
  }
}

/**
 * Declares every prototype of `table` on `lib` and returns the functions by name. Prototypes are
 * C-like strings (koffi's syntax), kept in the ffi/*.ts files as plain data so they can be checked
 * without a GPU (test/ffi.test.ts parses each one).
 */
export function bindAll<T>(lib: LibraryHandle, table: Readonly<Record<string, string>>): T {
  const out: Record<string, unknown> = {};
  for (const [name, proto] of Object.entries(table)) out[name] = lib.func(proto);
  return out as T;
}

/** Lazily bound functions of one library: the library is loaded when the first function is used. */
export function lazyBindings<T>(name: LibraryName, table: Readonly<Record<string, string>>, setup?: () => void): () => T {
  let bound: T | null = null;
  return () => {
    if (bound === null) {
      setup?.();
      bound = bindAll<T>(loadLibrary(name), table);
    }
    return bound;
  };
}

/** Forgets loaded libraries (tests switch FULGUR_CUDA_LIB_DIR between cases). */
export function resetLoadedLibrariesForTests(): void {
  loaded.clear();
}
