/**
 * The CUDA sources without a GPU: every kernel file compiles with nvcc for sm_80 and sm_90 with no
 * warning (what CI guards, DESIGN.md decision 4), a broken or warning kernel makes the script fail,
 * the files include nothing NVRTC would have to find on disk, and the numeric codes shared between
 * TypeScript and CUDA agree.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, copyFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { describe, expect, it } from "vitest";
import { BINARY_CODE, UNARY_CODE } from "../src/ops/elementwise";
import { DTYPE_CODE } from "../src/ops/dtypes";
import { STATUS_CE_TARGET, STATUS_EMBEDDING_ID } from "../src/deviceStatus";

const pkg = resolve(__dirname, "..");
const kernels = join(pkg, "kernels");
const script = join(pkg, "scripts", "compile-kernels.mjs");
const hasNvcc = spawnSync(process.env.NVCC ?? "nvcc", ["--version"]).status === 0;

function defines(file: string, prefix: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of readFileSync(join(kernels, file), "utf8").matchAll(new RegExp(`^#define ${prefix}(\\w+) (\\d+)`, "gm"))) {
    out[m[1]] = Number(m[2]);
  }
  return out;
}

describe("kernel sources", () => {
  it("include only the in-package header (NVRTC gets it in memory; no toolkit headers needed)", () => {
    for (const f of readdirSync(kernels).filter((f) => f.endsWith(".cu") || f.endsWith(".cuh"))) {
      const src = readFileSync(join(kernels, f), "utf8");
      const includes = [...src.matchAll(/^#include\s+(.+)$/gm)].map((m) => m[1].trim());
      for (const inc of includes) expect(inc, f).toBe('"common.cuh"');
      expect(src.startsWith("//"), `${f} starts with a header comment`).toBe(true);
    }
  });

  it("agree with the TypeScript op, dtype and status codes", () => {
    const u = defines("elementwise.cu", "U_");
    for (const [op, code] of Object.entries(UNARY_CODE)) expect(u[op.toUpperCase()], op).toBe(code);
    const b = defines("elementwise.cu", "B_");
    for (const [op, code] of Object.entries(BINARY_CODE)) expect(b[op.toUpperCase()], op).toBe(code);
    const dt = defines("common.cuh", "DT_");
    expect(dt).toEqual({ F32: DTYPE_CODE.float32, F64: DTYPE_CODE.float64, BF16: DTYPE_CODE.bfloat16, F16: DTYPE_CODE.float16, I32: DTYPE_CODE.int32 });
    const st = defines("common.cuh", "STATUS_");
    expect(st).toEqual({ EMBEDDING_ID: STATUS_EMBEDDING_ID, CE_TARGET: STATUS_CE_TARGET });
  });
});

describe.skipIf(!hasNvcc)("compile-kernels script (nvcc)", () => {
  it("compiles every kernel for sm_80 and sm_90 with no error or warning", () => {
    const r = spawnSync(process.execPath, [script], { encoding: "utf8" });
    const files = readdirSync(kernels).filter((f) => f.endsWith(".cu"));
    expect(r.stdout).toContain(`${files.length * 2} passed, 0 failed`);
    expect(r.status, r.stdout + r.stderr).toBe(0);
  }, 240_000);

  it("fails on a kernel that does not compile and on one that only warns", () => {
    const dir = mkdtempSync(join(tmpdir(), "fulgur-badkernel-"));
    try {
      copyFileSync(join(kernels, "common.cuh"), join(dir, "common.cuh"));
      writeFileSync(join(dir, "broken.cu"), '// broken\n#include "common.cuh"\nextern "C" __global__ void k(float* x) { x[0] = undefined_name; }\n');
      writeFileSync(join(dir, "warns.cu"), '// warns\n#include "common.cuh"\nextern "C" __global__ void k(float* x) { int unused = 3; x[0] = 1.0f; }\n');
      const r = spawnSync(process.execPath, [script, "--kernels", dir, "--arch", "sm_90"], { encoding: "utf8" });
      expect(r.status).toBe(1);
      expect(r.stdout).toMatch(/FAIL broken\.cu sm_90[\s\S]*undefined_name/);
      expect(r.stdout).toMatch(/FAIL warns\.cu sm_90/);
      expect(r.stdout).toContain("0 passed, 2 failed");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);

  it("rejects a malformed architecture before running nvcc", () => {
    const r = spawnSync(process.execPath, [script, "--arch", "hopper"], { encoding: "utf8" });
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('--arch: got "hopper"');
  });
});

if (!hasNvcc) {
  describe("compile-kernels script (nvcc)", () => {
    it.skip("skipped: nvcc not found (set NVCC or add the CUDA toolkit to PATH)", () => {});
  });
}
