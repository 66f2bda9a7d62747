/** `fulgur strategies` and `fulgur env`: what is registered, what is installable, what this machine has. */
import { describe, expect, it } from "vitest";
import { KNOWN_STRATEGY_PACKAGES } from "@fulgur/core";
import { type EnvReport, type PluginsReport, renderCudaReport } from "../src/index";
import { cli } from "./helpers";

describe("fulgur strategies", () => {
  it("lists single_device from the strategy kit and the CPU accelerator", async () => {
    const r = await cli("strategies");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^ {2}single_device\s+@fulgur\/strategy-kit\s+one process on one device, no communication$/m);
    expect(r.out).toMatch(/^ {2}cpu\s+@fulgur\/trainer\s+available\s+the pure-TypeScript CPU backend$/m);
  });

  it("--json accounts for every known strategy name: registered or in an unloaded package", async () => {
    const r = await cli("strategies", "--json");
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out) as PluginsReport;
    expect(report.strategies).toContainEqual({ name: "single_device", package: "@fulgur/strategy-kit", description: "one process on one device, no communication" });
    expect(report.accelerators.find((a) => a.name === "cpu")).toMatchObject({ available: true, deviceCount: null });
    const registered = new Set(report.strategies.map((s) => s.name));
    for (const [name, pkg] of Object.entries(KNOWN_STRATEGY_PACKAGES)) {
      const unloaded = report.unloaded.find((u) => u.package === pkg);
      // A name is either registered (its package loaded) or listed with the package that would bring it.
      expect(registered.has(name) || (unloaded?.names.includes(name) ?? false), name).toBe(true);
    }
    // A package that is not installed shows as installable, with its names and the install line.
    for (const u of report.unloaded.filter((x) => x.status === "missing")) {
      expect(u.reason).toBe(`not installed (npm install ${u.package})`);
      expect(u.names.length).toBeGreaterThan(0);
    }
    const fsdp = report.unloaded.find((u) => u.package === "@fulgur/strategy-fsdp");
    if (fsdp) expect(fsdp).toMatchObject({ kind: "strategy", names: expect.arrayContaining(["fsdp", "fsdp_full_shard"]) });
    else expect(registered.has("fsdp")).toBe(true);
    expect(r.out.trim().split("\n")).toHaveLength(1);
  });

  it("prints the install line of each missing package in text mode", async () => {
    const r = await cli("strategies");
    const report = JSON.parse((await cli("strategies", "--json")).out) as PluginsReport;
    const missing = report.unloaded.filter((u) => u.status === "missing");
    if (missing.length) expect(r.out).toContain("Available to install");
    for (const u of missing) expect(r.out).toMatch(new RegExp(`npm install ${u.package}\\s+${u.kind}: ${u.names[0]}, `));
  });
});

describe("fulgur env", () => {
  it("--json has node, cpu, memory and package versions", async () => {
    const r = await cli("env", "--json");
    expect(r.code).toBe(0);
    const env = JSON.parse(r.out) as EnvReport;
    expect(env.node.version).toBe(process.version);
    expect(env.node.platform).toBe(process.platform);
    expect(env.cpu.count).toBeGreaterThan(0);
    expect(env.memory.totalBytes).toBeGreaterThan(env.memory.freeBytes);
    expect(env.packages["@fulgur/tensor"]).toMatch(/^\d+\.\d+\.\d+/);
    expect(env.packages["@fulgur/cli"]).toMatch(/^\d+\.\d+\.\d+/);
    for (const v of Object.values(env.packages)) expect(v === null || /^\d+\.\d+\.\d+/.test(v)).toBe(true);
  });

  it("reports CUDA support as found or as why not, without throwing", async () => {
    const r = await cli("env", "--json");
    const env = JSON.parse(r.out) as EnvReport;
    if (env.cuda.status === "ok") {
      expect(typeof env.cuda.report).toBe("object");
    } else {
      // On a machine without a usable @fulgur/accelerator-cuda build the reason is spelled out.
      expect(env.cuda.message).toMatch(/^@fulgur\/accelerator-cuda (not installed|installed but not built|failed to load|.*cudaEnvironmentReport)/);
    }
    const text = await cli("env");
    expect(text.code).toBe(0);
    expect(text.out).toMatch(/^ {2}node\s+v\d+/m);
    expect(text.out).toMatch(/^CUDA[: ]/m);
  });
});

describe("the CUDA section of fulgur env", () => {
  it("lays out GPUs, versions and the libraries found and missing", () => {
    const text = renderCudaReport({
      gpus: [{ index: 0, name: "NVIDIA H100 80GB HBM3", computeCapability: "9.0", totalMemory: 85_028_896_768 }],
      driverVersion: "12.8",
      runtimeVersion: "12.4",
      cublasLtVersion: "12.4.5",
      ncclVersion: null,
      nvrtcVersion: "12.4",
      libraries: { "libcudart.so.12": { path: "/usr/local/cuda/lib64/libcudart.so.12" }, "libnccl.so.2": { error: "cannot open shared object file" } },
      problems: ["NCCL version: library missing"],
    });
    expect(text).toMatch(/^ {2}driver\s+12\.8$/m);
    expect(text).toMatch(/^ {2}runtime\s+12\.4$/m);
    expect(text).toMatch(/^ {2}cuBLASLt\s+12\.4\.5$/m);
    expect(text).toMatch(/^ {2}NCCL\s+not available$/m);
    expect(text).toMatch(/^ {2}NVRTC\s+12\.4$/m);
    expect(text).toMatch(/^ {4}cuda:0\s+NVIDIA H100 80GB HBM3\s+compute capability 9\.0\s+79\.2 GiB$/m);
    expect(text).toMatch(/^ {4}libcudart\.so\.12\s+found: \/usr\/local\/cuda\/lib64\/libcudart\.so\.12$/m);
    expect(text).toMatch(/^ {4}libnccl\.so\.2\s+not found: cannot open shared object file$/m);
    expect(text).toMatch(/^ {2}problems\n {4}NCCL version: library missing$/m);
  });

  it("shows a report of another shape as an indented tree", () => {
    expect(renderCudaReport({ devices: 2, memoryBytes: 2048 })).toBe("  devices: 2\n  memoryBytes: 2.00 KiB (2048 bytes)\n");
  });
});
