/** The CPU backend's public surface; kernels stay internal to this folder. */
export { CpuBackend, cpuBackend, setCpuMemoryLimit } from "./backend";
export { CpuStorage } from "./storage";
export { philox4x32 } from "./random";
