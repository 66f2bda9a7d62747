/**
 * The on-disk kernel cache with an injected compiler (no NVRTC needed): what goes into the key,
 * that a hit skips the compiler, that writes are atomic and leave no temporaries, and where the
 * cache lives.
 */
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { homedir, tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { CompileRequest } from "../src/kernelCache";
import { KernelCache, cacheKey, defaultCacheDir } from "../src/kernelCache";
import { kernelSource } from "../src/kernelSource";
import { nvrtcOptions } from "../src/nvrtc";

const req = (over: Partial<{ source: string; header: string; arch: string; version: string; options: string[] }> = {}): CompileRequest => ({
  source: { name: "demo", source: over.source ?? 'extern "C" __global__ void k() {}', headers: { "common.cuh": over.header ?? "// h" } },
  arch: over.arch ?? "sm_90",
  compilerVersion: over.version ?? "nvrtc 13.0",
  options: over.options ?? nvrtcOptions(over.arch ?? "sm_90"),
});

describe("cacheKey", () => {
  it("is stable for the same inputs and changes with each of source, header, arch, compiler and options", () => {
    const base = cacheKey(req());
    expect(cacheKey(req())).toBe(base);
    expect(base).toMatch(/^[0-9a-f]{64}$/);
    const variants = [
      cacheKey(req({ source: 'extern "C" __global__ void k() { }' })),
      cacheKey(req({ header: "// h2" })),
      cacheKey(req({ arch: "sm_80" })),
      cacheKey(req({ version: "nvrtc 13.1" })),
      cacheKey(req({ options: ["--gpu-architecture=sm_90", "-std=c++20"] })),
    ];
    for (const v of variants) expect(v).not.toBe(base);
    expect(new Set(variants).size).toBe(variants.length);
  });

  it("does not confuse boundaries between fields", () => {
    const a = cacheKey({ ...req(), source: { name: "ab", source: "c", headers: {} } });
    const b = cacheKey({ ...req(), source: { name: "a", source: "bc", headers: {} } });
    expect(a).not.toBe(b);
  });
});

describe("KernelCache", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "fulgur-kc-"));
  });
  afterEach(() => {
    chmodSync(dir, 0o755);
    rmSync(dir, { recursive: true, force: true });
  });

  it("compiles on a miss, stores the CUBIN, and serves it from disk afterwards", () => {
    const cubin = new Uint8Array([0x7f, 0x45, 0x4c, 0x46, 1, 2, 3]);
    const compile = vi.fn(() => cubin);
    const first = new KernelCache(join(dir, "k")).get(req(), compile);
    expect(first.hit).toBe(false);
    expect(compile).toHaveBeenCalledTimes(1);
    expect(existsSync(first.path)).toBe(true);
    expect(first.path).toMatch(/demo-sm_90-[0-9a-f]{32}\.cubin$/);
    const again = new KernelCache(join(dir, "k")).get(req(), compile);
    expect(again.hit).toBe(true);
    expect(compile).toHaveBeenCalledTimes(1);
    expect([...again.cubin]).toEqual([...cubin]);
    // A different architecture is a different entry.
    const other = new KernelCache(join(dir, "k")).get(req({ arch: "sm_80" }), compile);
    expect(other.hit).toBe(false);
    expect(compile).toHaveBeenCalledTimes(2);
  });

  it("leaves only complete files: no temporaries after writes, nothing after a failed compile", () => {
    const c = new KernelCache(dir);
    c.get(req(), () => new Uint8Array(1000).fill(7));
    c.get(req({ arch: "sm_80" }), () => new Uint8Array(10).fill(1));
    expect(() => c.get(req({ arch: "sm_86" }), () => {
      throw new Error("kernels/demo.cu does not compile");
    })).toThrow(/does not compile/);
    const files = readdirSync(dir);
    expect(files.filter((f) => f.endsWith(".tmp"))).toEqual([]);
    expect(files).toHaveLength(2);
    expect(readFileSync(c.pathFor(req())).length).toBe(1000);
  });

  it("still returns the kernel when the cache cannot be written, with one warning", () => {
    chmodSync(dir, 0o500);
    if (process.getuid?.() === 0) return; // root ignores directory permissions; nothing to observe
    const warn = vi.spyOn(process, "emitWarning").mockImplementation(() => {});
    const r = new KernelCache(join(dir, "sub")).get(req(), () => new Uint8Array([1]));
    expect([...r.cubin]).toEqual([1]);
    expect(warn).toHaveBeenCalledTimes(1);
    warn.mockRestore();
  });
});

describe("defaultCacheDir", () => {
  it("follows FULGUR_KERNEL_CACHE, then XDG_CACHE_HOME, then ~/.cache", () => {
    expect(defaultCacheDir({ FULGUR_KERNEL_CACHE: "/x/k", XDG_CACHE_HOME: "/y" })).toBe("/x/k");
    expect(defaultCacheDir({ XDG_CACHE_HOME: "/y" })).toBe("/y/fulgur/kernels");
    expect(defaultCacheDir({})).toBe(join(homedir(), ".cache", "fulgur", "kernels"));
  });
});

describe("kernelSource", () => {
  it("reads a kernel file with the headers it includes, for NVRTC's in-memory include", () => {
    const ks = kernelSource("elementwise");
    expect(ks.source).toContain('extern "C" __global__ void ew_binary');
    expect(Object.keys(ks.headers)).toEqual(["common.cuh"]);
    expect(ks.headers["common.cuh"]).toContain("struct Shape8");
  });

  it("names the directory and what is there when a kernel is missing", () => {
    expect(() => kernelSource("nope")).toThrow(/nope\.cu not found in .*kernels.*elementwise\.cu/s);
  });

  it("rejects a bad architecture name in the NVRTC options", () => {
    expect(nvrtcOptions("sm_90")).toEqual(["--gpu-architecture=sm_90", "-std=c++17"]);
    expect(() => nvrtcOptions("hopper")).toThrow(/expected a name like "sm_90"/);
  });
});
