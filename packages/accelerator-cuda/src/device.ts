/**
 * CUDA devices: parsing device strings, counting GPUs, making one current, and the facts about it
 * that the rest of the package needs (compute capability for NVRTC, shared-memory limits for the
 * attention kernels, name and memory for `fulgur env`). Properties are read once and cached.
 */
import { check } from "./check";
import {
  cudaDevAttrComputeCapabilityMajor,
  cudaDevAttrComputeCapabilityMinor,
  cudaDevAttrMaxSharedMemoryPerBlockOptin,
  cudaDevAttrMemoryPoolsSupported,
  cudaDevAttrMultiProcessorCount,
  cudaErrorNoDevice,
  cudart,
} from "./ffi/cudart";
import { ensureDriverInitialised } from "./ffi/driver";

export interface DeviceProperties {
  readonly index: number;
  readonly name: string;
  /** [major, minor], e.g. [9, 0] for H100. */
  readonly computeCapability: readonly [number, number];
  readonly totalMemory: number;
  readonly multiProcessorCount: number;
  /** Largest dynamic shared memory a block may opt into (bytes). */
  readonly maxSharedMemoryPerBlockOptin: number;
  readonly memoryPoolsSupported: boolean;
}

/** "cuda:3" / "gpu:3" -> 3; "cuda" / "gpu" -> 0. Anything else names the value and the accepted forms. */
export function parseDevice(device: string): number {
  const m = typeof device === "string" ? /^(cuda|gpu)(?::(\d+))?$/.exec(device) : null;
  if (!m) {
    throw new TypeError(`device: got ${JSON.stringify(device)}; expected "cuda", "cuda:<index>" (or "gpu:<index>")`);
  }
  return m[2] === undefined ? 0 : Number(m[2]);
}

/** Number of visible GPUs; 0 when the driver reports none (cudaErrorNoDevice), errors otherwise. */
export function deviceCount(): number {
  const n: [number] = [0];
  const code = cudart().cudaGetDeviceCount(n);
  if (code === cudaErrorNoDevice) return 0;
  check(code, "cudaGetDeviceCount");
  return n[0];
}

function checkIndex(index: number): void {
  const n = deviceCount();
  if (!Number.isInteger(index) || index < 0 || index >= n) {
    throw new RangeError(
      `device index ${index} is out of range: ${n} CUDA device${n === 1 ? " is" : "s are"} visible` +
        (process.env.CUDA_VISIBLE_DEVICES !== undefined ? ` (CUDA_VISIBLE_DEVICES=${process.env.CUDA_VISIBLE_DEVICES})` : ""),
    );
  }
}

let currentDevice = -1;
const initialised = new Set<number>();

/**
 * Makes `index` the current device of this thread, creating its primary context on first use, so
 * runtime and driver calls that follow (module loads, launches) target it. Cheap when already current.
 */
export function setCurrentDevice(index: number): void {
  if (currentDevice === index) return;
  if (!initialised.has(index)) checkIndex(index);
  const rt = cudart();
  check(rt.cudaSetDevice(index), "cudaSetDevice", "cudart", `device ${index}`);
  if (!initialised.has(index)) {
    // cudaFree(NULL) is the documented way to force the primary context into existence now rather
    // than inside the first kernel launch, where a failure would be harder to attribute.
    check(rt.cudaFree(null), "cudaFree(NULL)", "cudart", `initialising device ${index}`);
    initialised.add(index);
  }
  currentDevice = index;
}

function attribute(attr: number, index: number, label: string): number {
  const v: [number] = [0];
  check(cudart().cudaDeviceGetAttribute(v, attr, index), "cudaDeviceGetAttribute", "cudart", label);
  return v[0];
}

const propsCache = new Map<number, DeviceProperties>();

export function deviceProperties(index: number): DeviceProperties {
  const cached = propsCache.get(index);
  if (cached) return cached;
  checkIndex(index);
  const drv = ensureDriverInitialised(check);
  const dev: [number] = [0];
  check(drv.cuDeviceGet(dev, index), "cuDeviceGet", "driver");
  const nameBuf = new Uint8Array(256);
  check(drv.cuDeviceGetName(nameBuf, nameBuf.length, dev[0]), "cuDeviceGetName", "driver");
  const end = nameBuf.indexOf(0);
  const total: [number | bigint] = [0];
  check(drv.cuDeviceTotalMem_v2(total, dev[0]), "cuDeviceTotalMem_v2", "driver");
  const props: DeviceProperties = Object.freeze({
    index,
    name: new TextDecoder().decode(nameBuf.subarray(0, end < 0 ? nameBuf.length : end)),
    computeCapability: Object.freeze([
      attribute(cudaDevAttrComputeCapabilityMajor, index, "compute capability major"),
      attribute(cudaDevAttrComputeCapabilityMinor, index, "compute capability minor"),
    ]) as readonly [number, number],
    totalMemory: Number(total[0]),
    multiProcessorCount: attribute(cudaDevAttrMultiProcessorCount, index, "multiprocessor count"),
    maxSharedMemoryPerBlockOptin: attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, index, "max shared memory optin"),
    memoryPoolsSupported: attribute(cudaDevAttrMemoryPoolsSupported, index, "memory pools supported") !== 0,
  });
  propsCache.set(index, props);
  return props;
}

/** The NVRTC/nvcc architecture name for a compute capability: [9, 0] -> "sm_90". */
export function archOf(cc: readonly [number, number]): string {
  return `sm_${cc[0]}${cc[1]}`;
}
