/**
 * The "cuda" Accelerator of the core contract: how the Trainer asks whether GPUs are there, which
 * device a local rank uses, and how much memory it holds. Registered as "cuda" and "gpu". Nothing
 * here opens a GPU until setupDevice(); isAvailable() and deviceCount() never throw, they answer
 * false / 0 when the libraries or the driver are missing.
 */
import type {
  Accelerator,
  AcceleratorMemoryStats,
  DeviceMemoryInfo,
  DeviceMemoryReporting,
  PluginFactory,
  ProcessGroup,
  ProcessGroupOptions,
  ProcessGroupProvider,
  RegisterOptions,
} from "@fulgur/core";
import { CONTRACT_VERSION } from "@fulgur/core";
import { cudaBackend, registerCudaBackend } from "./cudaBackend";
import { liveContexts } from "./context";
import { deviceCount, deviceProperties, parseDevice } from "./device";
import { check } from "./check";
import { cudart } from "./ffi/cudart";
import { probeLibrary } from "./ffi/libraries";
import { createCudaProcessGroup } from "./cudaProcessGroup";

export class CudaAccelerator implements Accelerator, ProcessGroupProvider, DeviceMemoryReporting {
  readonly contractVersion = CONTRACT_VERSION;
  readonly name = "cuda";

  isAvailable(): boolean {
    return this.deviceCount() > 0;
  }

  deviceCount(): number {
    if (!probeLibrary("cudart").ok) return 0;
    try {
      return deviceCount();
    } catch {
      return 0;
    }
  }

  deviceFor(localRank: number): string {
    if (!Number.isInteger(localRank) || localRank < 0) {
      throw new RangeError(`localRank: got ${localRank}; expected a non-negative integer`);
    }
    return `cuda:${localRank}`;
  }

  async setupDevice(device: string): Promise<void> {
    parseDevice(device);
    registerCudaBackend();
    // Opens the device: primary context, compute stream, memory pool.
    void cudaBackend(device).ctx;
  }

  memoryStats(device: string): AcceleratorMemoryStats {
    return cudaBackend(device).memoryStats();
  }

  /** The device's total memory (cuDeviceTotalMem), read without opening a context on it: the memory plan's GPU figure. */
  deviceMemoryBytes(device: string): number {
    return deviceProperties(parseDevice(device)).totalMemory;
  }

  /**
   * Free and total memory of the device (cudaMemGetInfo, in the device's context, which this
   * opens): what ZeRO's `offloadKeep: "auto"` sizes the units it keeps on the device by. Memory
   * cached in Fulgur's own pool counts as used.
   */
  deviceMemory(device: string): DeviceMemoryInfo {
    cudaBackend(device).ctx.makeCurrent();
    const free: [number | bigint] = [0];
    const total: [number | bigint] = [0];
    check(cudart().cudaMemGetInfo(free, total), "cudaMemGetInfo", "cudart", device);
    return { free: Number(free[0]), total: Number(total[0]) };
  }

  /** Data-parallel strategies reduce over NCCL on GPUs; the store carries the NCCL unique id. */
  /** NCCL, or the host-staged CPU transport when ranks share a GPU (or FULGUR_PROCESS_GROUP=host; DESIGN.md decision 16). */
  async createProcessGroup(options: ProcessGroupOptions): Promise<ProcessGroup> {
    return createCudaProcessGroup(options);
  }

  async teardown(): Promise<void> {
    for (const ctx of liveContexts()) ctx.synchronize();
  }
}

/** The part of core's Registry this package uses (checked by shape, DESIGN.md decision 11). */
export interface AcceleratorRegistryLike {
  register(name: string, factory: PluginFactory<Accelerator>, options?: RegisterOptions): void;
  has(name: string): boolean;
}

const ALIASES: readonly { name: string; description: string }[] = [
  { name: "cuda", description: "NVIDIA GPUs through CUDA 13 (cuBLASLt, NVRTC kernels, NCCL)" },
  { name: "gpu", description: "alias of cuda" },
];

/** Registers "cuda" and "gpu" unless already registered. */
export function registerAccelerators(registry: AcceleratorRegistryLike): void {
  for (const { name, description } of ALIASES) {
    if (registry.has(name)) continue;
    registry.register(name, () => new CudaAccelerator(), { description, package: "@fulgur/accelerator-cuda" });
  }
}
