/** A kind of device the Trainer can run on (cpu, cuda). */
import type { ContractVersioned } from "./plugin";

export interface AcceleratorMemoryStats {
  readonly allocated: number;
  readonly reserved: number;
  readonly peak: number;
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
  teardown(): Promise<void>;
}
