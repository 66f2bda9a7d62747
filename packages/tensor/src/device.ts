/**
 * Which backend serves a device string. The CPU backend is built in; other packages (the CUDA
 * accelerator) register a factory for their prefix, so importing @fulgur/tensor never loads a GPU.
 * The `meta` device (shapes without data, for deferred initialisation: meta/backend.ts) is
 * registered here like any other backend.
 */
import type { Backend } from "./backend";
import { cpuBackend } from "./cpu";
import { metaBackend } from "./meta";
import { restoreAfter } from "./restoreAfter";

export type BackendFactory = (device: string) => Backend;

const factories = new Map<string, BackendFactory>();
const instances = new Map<string, Backend>();

export function registerBackend(prefix: string, factory: BackendFactory): void {
  if (!/^[a-z][a-z0-9_]*$/.test(prefix)) {
    throw new TypeError(`registerBackend: prefix ${JSON.stringify(prefix)} must be lower-case letters, digits or '_'`);
  }
  factories.set(prefix, factory);
  for (const key of [...instances.keys()]) if (key.split(":")[0] === prefix) instances.delete(key);
}

// Devices that are one per process and named without an index.
const SINGLE = new Set(["cpu", "meta"]);

/** "cuda" -> "cuda:0"; "cpu:0" -> "cpu"; "meta:0" -> "meta". */
export function normalizeDevice(device: string): string {
  if (typeof device !== "string" || device.length === 0) {
    throw new TypeError(`device: got ${JSON.stringify(device)}; expected "cpu", "meta" or "<type>:<index>" such as "cuda:0"`);
  }
  const [prefix, index] = device.split(":");
  if (SINGLE.has(prefix)) return prefix;
  if (index === undefined) return `${prefix}:0`;
  if (!/^\d+$/.test(index)) throw new TypeError(`device: bad index in ${JSON.stringify(device)}`);
  return `${prefix}:${Number(index)}`;
}

export function getBackend(device = "cpu"): Backend {
  const key = normalizeDevice(device);
  let backend = instances.get(key);
  if (backend) return backend;
  const prefix = key.split(":")[0];
  if (prefix === "cpu") backend = cpuBackend();
  else {
    const factory = factories.get(prefix);
    if (!factory) {
      const hint = prefix === "cuda" ? ": import @fulgur/accelerator-cuda (npm install @fulgur/accelerator-cuda)" : "";
      throw new Error(
        `device ${JSON.stringify(device)}: no backend is registered for "${prefix}"${hint}; registered: cpu${[...factories.keys()].map((k) => ", " + k).join("")}`,
      );
    }
    backend = factory(key);
  }
  instances.set(key, backend);
  return backend;
}

export function registeredBackends(): string[] {
  return ["cpu", ...factories.keys()];
}

registerBackend("meta", () => metaBackend());

let defaultDevice = "cpu";

/** The device factories use when none is given ("cpu" unless inside `withDevice`). */
export function defaultDeviceName(): string {
  return defaultDevice;
}

/**
 * Runs fn with `device` as the default for new tensors, so a model can be built directly where it
 * will train (the Trainer builds `configureModel` this way) instead of on the CPU and copied over.
 */
export function withDevice<T>(device: string, fn: () => T): T {
  const prev = defaultDevice;
  defaultDevice = normalizeDevice(device);
  return restoreAfter(fn, () => {
    defaultDevice = prev;
  });
}
