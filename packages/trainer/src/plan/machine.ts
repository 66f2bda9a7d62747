/**
 * The machine a memory plan is made for: GPU memory per device, host memory per node, devices per
 * node and nodes. Either this machine (the accelerator's own figure when it reports one, the host's
 * from `os.totalmem()`) or one described by the user ("80GiB", "1TiB"), so a plan for a cluster can
 * be made on a laptop.
 */
import { totalmem } from "node:os";
import type { Accelerator } from "@fulgur/core";
import { reportsDeviceTotalMemory } from "@fulgur/core";

export interface Machine {
  /** Bytes of one device's memory. */
  readonly gpuMemoryBytes: number;
  /** Bytes of one node's host memory (shared by the node's ranks). */
  readonly hostMemoryBytes: number;
  readonly devicesPerNode: number;
  readonly nodes: number;
  /** Where the figures came from, for the plan's header ("described", "cuda:0 and os.totalmem()"). */
  readonly source: string;
  /** Devices are GPUs beside the host (described, or reported by the accelerator), not the host itself. */
  readonly gpu?: boolean;
  /** Bytes of one node's disk for NVMe offload, when described; undefined: not checked. */
  readonly diskBytes?: number;
}

/** What a user may describe; what is left out comes from this machine. */
export interface MachineDescription {
  readonly gpuMemory?: number | string;
  readonly hostMemory?: number | string;
  /** Free space on each node's drive for NVMe offload's swap files; left out, NVMe offload is planned but never fits. */
  readonly diskSpace?: number | string;
}

const UNITS: Readonly<Record<string, number>> = {
  B: 1,
  KB: 1e3,
  MB: 1e6,
  GB: 1e9,
  TB: 1e12,
  KIB: 2 ** 10,
  MIB: 2 ** 20,
  GIB: 2 ** 30,
  TIB: 2 ** 40,
};

/**
 * Bytes from a size such as "80GiB", "1.5 TiB", "512GB" or a number of bytes. `field` names what is
 * being read in the error ("--gpu-memory", "machine.gpuMemory").
 */
export function parseBytes(field: string, value: number | string): number {
  const allowed = 'a positive size such as "80GiB", "512GB", "1TiB" (units B, KB, MB, GB, TB, KiB, MiB, GiB, TiB) or a number of bytes';
  let bytes = Number.NaN;
  if (typeof value === "number") bytes = value;
  else if (typeof value === "string") {
    const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(value);
    const unit = m ? (m[2] === "" ? 1 : UNITS[m[2].toUpperCase()]) : undefined;
    if (m && unit !== undefined) bytes = Number(m[1]) * unit;
  }
  if (!Number.isFinite(bytes) || bytes <= 0) throw new RangeError(`${field}: got ${JSON.stringify(value)}; expected ${allowed}`);
  return Math.round(bytes);
}

/** A positive integer count ("--devices", "--nodes"), refused with the field and the value otherwise. */
export function parseCount(field: string, value: number | string): number {
  const n = typeof value === "number" ? value : /^\s*\d+\s*$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`${field}: got ${JSON.stringify(value)}; expected a positive integer`);
  return n;
}

/**
 * The machine to plan for. GPU memory: described, else the accelerator's own figure for its first
 * device, else (the CPU accelerator, whose device is the host) the host's memory.
 */
export function describeMachine(
  layout: { readonly devicesPerNode: number; readonly nodes: number },
  description: MachineDescription = {},
  accelerator: Accelerator | null = null,
): Machine {
  const sources: string[] = [];
  let gpu: number;
  let gpuMachine = true;
  if (description.gpuMemory !== undefined) {
    gpu = parseBytes("gpuMemory", description.gpuMemory);
    sources.push("GPU memory described");
  } else if (accelerator && accelerator.name !== "cpu" && reportsDeviceTotalMemory(accelerator)) {
    const device = accelerator.deviceFor(0);
    gpu = accelerator.deviceMemoryBytes(device);
    sources.push(`GPU memory of ${device}`);
  } else {
    gpu = totalmem();
    gpuMachine = false;
    sources.push("no GPU: device memory is the host's (os.totalmem())");
  }
  let host: number;
  if (description.hostMemory !== undefined) {
    host = parseBytes("hostMemory", description.hostMemory);
    sources.push("host memory described");
  } else {
    host = totalmem();
    sources.push("host memory from os.totalmem()");
  }
  let disk: number | undefined;
  if (description.diskSpace !== undefined) {
    disk = parseBytes("diskSpace", description.diskSpace);
    sources.push("disk described");
  }
  return Object.freeze({ gpuMemoryBytes: gpu, hostMemoryBytes: host, devicesPerNode: layout.devicesPerNode, nodes: layout.nodes, source: sources.join("; "), gpu: gpuMachine, diskBytes: disk });
}
