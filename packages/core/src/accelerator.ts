/** A kind of device the Trainer can run on (cpu, cuda). */
import type { ContractVersioned } from "./plugin";
import type { ProcessGroup } from "./processGroup";
import type { Store } from "./store";

export interface AcceleratorMemoryStats {
  readonly allocated: number;
  readonly reserved: number;
  readonly peak: number;
}

/** A device's memory as its driver reports it (CUDA's cudaMemGetInfo), in bytes. */
export interface DeviceMemoryInfo {
  /** Free now, for this process to allocate (other processes' use already subtracted). */
  readonly free: number;
  readonly total: number;
}

export interface Accelerator extends ContractVersioned {
  readonly name: string;
  isAvailable(): boolean;
  deviceCount(): number;
  /** The device string for a local rank ("cpu", "cuda:1"). */
  deviceFor(localRank: number): string;
  /** Makes the device current for this process and loads what it needs (lazily: importing needs no GPU). */
  setupDevice(device: string): Promise<void>;
  memoryStats(device: string): AcceleratorMemoryStats;
  /**
   * Optional: the device's free and total memory (the CUDA accelerator: cudaMemGetInfo on the
   * device). Strategies that size what they keep on the device by what is free read it
   * (`reportsDeviceMemory`); an accelerator without it leaves them to be given a size.
   */
  deviceMemory?(device: string): DeviceMemoryInfo;
  teardown(): Promise<void>;
}

/** Whether the accelerator reports its devices' free and total memory. */
export function reportsDeviceMemory(a: object): a is Accelerator & Required<Pick<Accelerator, "deviceMemory">> {
  return typeof (a as Partial<Accelerator>).deviceMemory === "function";
}

export interface ProcessGroupOptions {
  readonly store: Store;
  readonly rank: number;
  readonly size: number;
  /** The device this rank uses ("cuda:1"). */
  readonly device: string;
  readonly timeoutMs: number;
}

/** Optional ability: the accelerator knows how much memory one of its devices has (for the memory plan). */
export interface DeviceMemoryReporting {
  /** Total bytes of `device`'s memory ("cuda:0"). */
  deviceMemoryBytes(device: string): number;
}

export function reportsDeviceTotalMemory(a: object): a is DeviceMemoryReporting {
  return typeof (a as Partial<DeviceMemoryReporting>).deviceMemoryBytes === "function";
}

/** Optional ability: the accelerator brings its own collectives (the CUDA package's NCCL group). */
export interface ProcessGroupProvider {
  createProcessGroup(options: ProcessGroupOptions): Promise<ProcessGroup>;
}

export function providesProcessGroup(a: object): a is ProcessGroupProvider {
  return typeof (a as Partial<ProcessGroupProvider>).createProcessGroup === "function";
}
