/**
 * Which process group CUDA tensors get: NCCL, or the host-staged group when NCCL cannot serve.
 *
 * [Note: host-staged group] NCCL refuses two ranks of one communicator on one GPU, so a job that
 * runs 2 to 4 ranks on the one GPU it was lent (DESIGN.md decision 16: testing every strategy's
 * GPU code at world > 1) uses the CPU process group of @fulgur/distributed over the CUDA tensors:
 * each call copies its inputs device to host, the CPU transport runs in its worker thread, and the
 * results are uploaded into the tensors (on the compute stream) by `wait()` or `synchronize()`.
 * It is a correctness path: the device-to-host copy at call time waits for the compute stream, and
 * every byte crosses the host twice. Speed is measured over NCCL on separate GPUs.
 *
 * It is chosen when FULGUR_PROCESS_GROUP=host, or when two ranks of the job are on the same GPU:
 * every rank publishes its GPU's host name and PCI address (domain:bus:device, which names the
 * physical device whatever CUDA_VISIBLE_DEVICES numbers it) in the store and reads everyone's, so
 * every rank reaches the same decision. FULGUR_PROCESS_GROUP=nccl skips the check. The variable must
 * have the same value on every rank (launchers pass the environment on unchanged).
 *
 * @fulgur/distributed is loaded on demand and is not a dependency of this package: NCCL jobs never
 * load it, and a job that needs it (a launcher, a strategy) has it already.
 */
import { hostname } from "node:os";
import type { ProcessGroup, ProcessGroupOptions, Store } from "@fulgur/core";
import { check } from "./check";
import { parseDevice } from "./device";
import { cudart } from "./ffi/cudart";
import { NcclProcessGroup } from "./nccl";

export const PROCESS_GROUP_ENV = "FULGUR_PROCESS_GROUP";

export type CudaProcessGroupKind = "nccl" | "host";

export interface CudaProcessGroupOptions extends ProcessGroupOptions {
  /** Names the group in store keys; unique among groups sharing the store (default "world"). */
  readonly name?: string;
  /** The environment FULGUR_PROCESS_GROUP is read from (default process.env). */
  readonly env?: Readonly<Record<string, string | undefined>>;
}

/** The process group of a rank whose tensors live on `options.device`; see [Note: host-staged group]. */
export async function createCudaProcessGroup(options: CudaProcessGroupOptions): Promise<ProcessGroup> {
  const kind = await chooseProcessGroup(options);
  const name = options.name ?? "world";
  if (kind === "nccl") return NcclProcessGroup.create({ ...options, name });
  const distributed = await loadDistributed();
  return distributed.createCpuProcessGroup({
    store: options.store,
    rank: options.rank,
    size: options.size,
    // Not the world CPU group's name: the job may have that one too, and addresses are keyed by it.
    name: `${name}-host-staged`,
    timeoutMs: options.timeoutMs,
  });
}

/** The kind of group every rank of the job will use; see [Note: host-staged group]. */
export async function chooseProcessGroup(options: CudaProcessGroupOptions): Promise<CudaProcessGroupKind> {
  const wanted = (options.env ?? process.env)[PROCESS_GROUP_ENV];
  if (wanted === "host" || wanted === "nccl") return wanted;
  if (wanted !== undefined && wanted !== "" && wanted !== "auto") {
    throw new TypeError(`${PROCESS_GROUP_ENV}: got ${JSON.stringify(wanted)}; expected "host", "nccl" or "auto" (the default)`);
  }
  if (options.size === 1) return "nccl";
  const devices = await exchange(options.store, `fulgur/cuda/${options.name ?? "world"}/device`, options.rank, options.size, deviceAddress(options.device), options.timeoutMs);
  return new Set(devices).size < devices.length ? "host" : "nccl";
}

/** Publishes `mine` and returns every rank's value, in rank order. */
async function exchange(store: Store, prefix: string, rank: number, size: number, mine: string, timeoutMs: number): Promise<string[]> {
  await store.set(`${prefix}/${rank}`, mine);
  const keys = Array.from({ length: size }, (_, r) => `${prefix}/${r}`);
  await store.wait(keys, timeoutMs);
  const decoder = new TextDecoder();
  return Promise.all(keys.map(async (k) => decoder.decode(await store.get(k, timeoutMs))));
}

// cudaDeviceAttr values (CUDA runtime API, driver_types.h).
const cudaDevAttrPciBusId = 33;
const cudaDevAttrPciDeviceId = 34;
const cudaDevAttrPciDomainId = 50;

/** "host/dddd:bb:dd": the machine and the GPU's PCI address. */
function deviceAddress(device: string): string {
  const index = parseDevice(device);
  const attr = (a: number, what: string) => {
    const v: [number] = [0];
    check(cudart().cudaDeviceGetAttribute(v, a, index), "cudaDeviceGetAttribute", "cudart", `${what} of ${device}`);
    return v[0].toString(16).padStart(2, "0");
  };
  const domain = attr(cudaDevAttrPciDomainId, "PCI domain").padStart(4, "0");
  return `${hostname()}/${domain}:${attr(cudaDevAttrPciBusId, "PCI bus")}:${attr(cudaDevAttrPciDeviceId, "PCI device")}`;
}

/** The part of @fulgur/distributed used here (checked by shape, DESIGN.md decision 11). */
interface DistributedModule {
  createCpuProcessGroup(options: { store: Store; rank: number; size: number; name: string; timeoutMs: number }): Promise<ProcessGroup>;
}

// A specifier in a variable, so that the bundler leaves the import to run time.
const DISTRIBUTED = "@fulgur/distributed";

async function loadDistributed(): Promise<DistributedModule> {
  try {
    return (await import(DISTRIBUTED)) as DistributedModule;
  } catch (err) {
    throw new Error(
      `the host-staged process group (${PROCESS_GROUP_ENV}=host, or several ranks on one GPU) needs ${DISTRIBUTED}, which could not be loaded: ` +
        `install it beside @fulgur/accelerator-cuda`,
      { cause: err },
    );
  }
}
