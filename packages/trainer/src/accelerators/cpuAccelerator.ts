/** The CPU accelerator: the pure-TypeScript backend of @fulgur/tensor, always available. */
import { CONTRACT_VERSION, type Accelerator, type AcceleratorMemoryStats } from "@fulgur/core";
import { getBackend } from "@fulgur/tensor";

export class CpuAccelerator implements Accelerator {
  readonly contractVersion = CONTRACT_VERSION;
  readonly name = "cpu";

  isAvailable(): boolean {
    return true;
  }

  /** Processes on one machine share the CPU backend; any count of CPU "devices" is allowed. */
  deviceCount(): number {
    return Number.MAX_SAFE_INTEGER;
  }

  deviceFor(_localRank: number): string {
    return "cpu";
  }

  async setupDevice(_device: string): Promise<void> {}

  memoryStats(_device: string): AcceleratorMemoryStats {
    const s = getBackend("cpu").memoryStats();
    return { allocated: s.allocated, reserved: s.reserved, peak: s.peak };
  }

  async teardown(): Promise<void> {}
}
