/**
 * The CPU accelerator the conformance runs hand to `setup`. The Trainer's `cpu` accelerator lives in
 * @fulgur/trainer, above the kit in the package table, so the kit carries this small one: the
 * contract over the CPU backend of @fulgur/tensor, always available, any number of ranks.
 */
import { type Accelerator, type AcceleratorMemoryStats, CONTRACT_VERSION } from "@fulgur/core";
import { getBackend } from "@fulgur/tensor";

export function conformanceCpuAccelerator(): Accelerator {
  return {
    contractVersion: CONTRACT_VERSION,
    name: "cpu",
    isAvailable: () => true,
    // Ranks on one machine share the CPU backend, so any count of CPU "devices" is allowed.
    deviceCount: () => Number.MAX_SAFE_INTEGER,
    deviceFor: () => "cpu",
    setupDevice: async () => {},
    memoryStats: (): AcceleratorMemoryStats => {
      const s = getBackend("cpu").memoryStats();
      return { allocated: s.allocated, reserved: s.reserved, peak: s.peak };
    },
    teardown: async () => {},
  };
}
