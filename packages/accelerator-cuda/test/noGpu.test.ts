/**
 * What a user on a machine without CUDA sees: importing the package registers the backend and the
 * accelerators without loading anything; the accelerator answers "not available" instead of
 * throwing; `fulgur env` reports each missing library; using a CUDA tensor names the missing file.
 * FULGUR_CUDA_LIB_DIR points at an empty directory so the result is the same on a GPU machine.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Accelerator } from "@fulgur/core";
import { AcceleratorRegistry, Registry, assertAccelerator, isAccelerator } from "@fulgur/core";
import { getBackend, registeredBackends } from "@fulgur/tensor";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CudaAccelerator,
  CudaError,
  CudaLibraryError,
  CudaOutOfMemoryError,
  OOM_ADVICE,
  check,
  cudaEnvironmentReport,
  formatEnvironmentReport,
  parseDevice,
  registerAccelerators,
} from "../src/index";
import { resetLoadedLibrariesForTests } from "../src/ffi/libraries";
import { formatSummary } from "../src/allocator";
import { statusToError } from "../src/deviceStatus";
import { formatCublasVersion, formatCudaVersion, formatNcclVersion } from "../src/envReport";

let dir: string;
let saved: string | undefined;

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "fulgur-nocuda-"));
  saved = process.env.FULGUR_CUDA_LIB_DIR;
  process.env.FULGUR_CUDA_LIB_DIR = dir;
  resetLoadedLibrariesForTests();
});

afterAll(() => {
  if (saved === undefined) delete process.env.FULGUR_CUDA_LIB_DIR;
  else process.env.FULGUR_CUDA_LIB_DIR = saved;
  resetLoadedLibrariesForTests();
  rmSync(dir, { recursive: true, force: true });
});

describe("importing the package", () => {
  it("registers the cuda backend and the cuda/gpu accelerators", () => {
    expect(registeredBackends()).toContain("cuda");
    expect(AcceleratorRegistry.has("cuda")).toBe(true);
    expect(AcceleratorRegistry.has("gpu")).toBe(true);
    expect(AcceleratorRegistry.packageFor("gpu")).toBe("@fulgur/accelerator-cuda");
  });

  it("gives a CUDA backend object without touching a GPU, which fails with the missing file on first use", () => {
    const b = getBackend("cuda:1");
    expect(b.name).toBe("cuda");
    expect(b.device).toBe("cuda:1");
    expect(() => b.alloc("float32", 4)).toThrow(CudaLibraryError);
    expect(() => b.alloc("float32", 4)).toThrow(join(dir, "libcudart.so.13"));
  });
});

describe("CudaAccelerator", () => {
  const acc = new CudaAccelerator();

  it("fulfils the core contract by shape", () => {
    expect(isAccelerator(acc)).toBe(true);
    expect(() => assertAccelerator(acc)).not.toThrow();
    expect(acc.name).toBe("cuda");
  });

  it("answers not available, zero devices, instead of throwing", () => {
    expect(acc.isAvailable()).toBe(false);
    expect(acc.deviceCount()).toBe(0);
  });

  it("maps local ranks to device strings and rejects bad ones", () => {
    expect(acc.deviceFor(0)).toBe("cuda:0");
    expect(acc.deviceFor(3)).toBe("cuda:3");
    expect(() => acc.deviceFor(-1)).toThrow(/localRank: got -1/);
    expect(() => acc.deviceFor(1.5)).toThrow(/non-negative integer/);
  });

  it("registers under both names in a fresh registry, once", () => {
    const reg = new Registry<Accelerator>("accelerator", assertAccelerator, {});
    registerAccelerators(reg);
    registerAccelerators(reg);
    expect(reg.available()).toEqual(["cuda", "gpu"]);
    expect(reg.create("gpu").name).toBe("cuda");
  });

  it("setupDevice of a bad device string names the value", async () => {
    await expect(acc.setupDevice("tpu:0")).rejects.toThrow(/device: got "tpu:0"/);
  });
});

describe("parseDevice", () => {
  it("accepts cuda and gpu with an optional index", () => {
    expect(parseDevice("cuda")).toBe(0);
    expect(parseDevice("cuda:7")).toBe(7);
    expect(parseDevice("gpu:2")).toBe(2);
    expect(() => parseDevice("cuda:-1")).toThrow(/expected "cuda", "cuda:<index>"/);
  });
});

describe("environment report", () => {
  it("never throws and reports every library as missing with the reason", () => {
    const r = cudaEnvironmentReport();
    expect(r.gpus).toEqual([]);
    expect(r.driverVersion).toBeNull();
    expect(Object.keys(r.libraries).sort()).toEqual(["libcublasLt.so.13", "libcuda.so.1", "libcudart.so.13", "libnccl.so.2", "libnvrtc.so.13"]);
    for (const lib of Object.values(r.libraries)) expect("error" in lib && lib.error).toContain(dir);
    const text = formatEnvironmentReport(r);
    expect(text).toContain("GPUs:     none found");
    expect(text).toMatch(/libnccl\.so\.2: missing: cannot load libnccl\.so\.2/);
  });

  it("decodes the libraries' version numbers", () => {
    expect(formatCudaVersion(13000)).toBe("13.0");
    expect(formatCudaVersion(12080)).toBe("12.8");
    expect(formatCublasVersion(130001)).toBe("13.0.1");
    expect(formatNcclVersion(22803)).toBe("2.28.3");
  });
});

describe("errors", () => {
  it("check() names the call and falls back to the number when the library cannot describe it", () => {
    expect(() => check(0, "cudaFree")).not.toThrow();
    let err: unknown;
    try {
      check(2, "cudaMallocAsync", "cudart", "4 GiB");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(CudaError);
    const e = err as CudaError;
    expect(e.call).toBe("cudaMallocAsync");
    expect(e.code).toBe(2);
    expect(e.message).toMatch(/^cudaMallocAsync failed with cudart status 2 \(2\): .*\(4 GiB\)$/);
    expect(() => check(7, "ncclAllReduce", "nccl")).toThrow(/ncclAllReduce failed with ncclInProgress \(7\)/);
  });

  it("turns device status records into the CPU backend's messages", () => {
    expect(statusToError(0, 0, 0, 0)).toBeNull();
    expect(statusToError(1, 300, 5, 256)!.message).toBe("embedding: index 300 at row 5 is out of range for an embedding of 256 rows");
    expect(statusToError(2, -3, 0, 17)!.message).toBe("crossEntropy: target -3 at row 0 is out of range for 17 classes");
  });

  it("formats a memory summary and carries the ways to need less memory", () => {
    const s = formatSummary("cuda:0 (NVIDIA H100)", { allocated: 3 * 2 ** 30, blocks: 12, peak: 5 * 2 ** 30, reserved: "6.00 GiB", reservedHigh: "7.00 GiB", device: "70 GiB free of 80 GiB" });
    expect(s).toContain("allocated (live tensors): 3.00 GiB in 12 blocks");
    expect(s).toContain("peak allocated:           5.00 GiB");
    for (const way of ["micro-batch", "activation checkpointing", "FSDP", "offload"]) expect(OOM_ADVICE).toContain(way);
    const e = new CudaOutOfMemoryError("CUDA out of memory", 1024, s);
    expect(e.name).toBe("CudaOutOfMemoryError");
    expect(e.summary).toBe(s);
  });
});
