/**
 * Finding strategies and accelerators by name. Built-ins are registered here; a name that belongs
 * to one of Fulgur's own packages is loaded on demand (its import registers it), so
 * `strategy: "ddp"` works with nothing more than `npm install @fulgur/strategy-ddp`.
 */
import {
  type Accelerator,
  AcceleratorRegistry,
  type Strategy,
  StrategyRegistry,
  UnknownPluginError,
  assertAccelerator,
  assertStrategy,
} from "@fulgur/core";
import { CpuAccelerator } from "./accelerators/cpuAccelerator";
import { SingleDeviceStrategy } from "./strategies/singleDevice";

export function registerBuiltins(): void {
  if (!StrategyRegistry.has("single_device")) {
    StrategyRegistry.register("single_device", (o) => new SingleDeviceStrategy(o as { device?: string }), {
      description: "one process on one device, no communication",
      package: "@fulgur/trainer",
    });
  }
  if (!AcceleratorRegistry.has("cpu")) {
    AcceleratorRegistry.register("cpu", () => new CpuAccelerator(), {
      description: "the pure-TypeScript CPU backend",
      package: "@fulgur/trainer",
    });
  }
}

async function loadPackageFor(kind: "strategy" | "accelerator", name: string): Promise<void> {
  const registry = kind === "strategy" ? StrategyRegistry : AcceleratorRegistry;
  if (registry.has(name)) return;
  const pkg = registry.packageFor(name);
  if (!pkg) return;
  try {
    await import(pkg);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ERR_MODULE_NOT_FOUND" || code === "MODULE_NOT_FOUND") {
      throw new UnknownPluginError(
        `${kind} "${name}" is provided by ${pkg}, which is not installed: run \`npm install ${pkg}\``,
        name,
        pkg,
      );
    }
    throw new Error(`${kind} "${name}": loading ${pkg} failed: ${(err as Error).message}`);
  }
}

export async function resolveStrategy(spec: string | object, options: Record<string, unknown>, worldSize: number): Promise<Strategy> {
  registerBuiltins();
  if (typeof spec === "object") {
    assertStrategy(spec, "strategy");
    return spec as Strategy;
  }
  const name = spec === "auto" ? (worldSize > 1 ? "ddp" : "single_device") : spec;
  await loadPackageFor("strategy", name);
  return StrategyRegistry.create(name, options);
}

export async function resolveAccelerator(spec: string | object): Promise<Accelerator> {
  registerBuiltins();
  if (typeof spec === "object") {
    assertAccelerator(spec, "accelerator");
    return spec as Accelerator;
  }
  if (spec === "cpu") return AcceleratorRegistry.create("cpu");
  const name = spec === "gpu" ? "cuda" : spec;
  if (name === "auto") {
    try {
      await loadPackageFor("accelerator", "cuda");
      if (AcceleratorRegistry.has("cuda")) {
        const cuda = AcceleratorRegistry.create("cuda");
        if (cuda.isAvailable()) return cuda;
      }
    } catch {
      // No CUDA package or no usable GPU: "auto" falls back to the CPU.
    }
    return AcceleratorRegistry.create("cpu");
  }
  await loadPackageFor("accelerator", name);
  const acc = AcceleratorRegistry.create(name);
  if (!acc.isAvailable()) {
    throw new Error(`accelerator "${spec}": no usable device was found; run \`fulgur env\` to see what was detected, or use accelerator: "cpu"`);
  }
  return acc;
}
