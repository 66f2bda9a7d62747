/**
 * Finding strategies, accelerators, precisions and checkpoint IO. Built-ins are registered here; a
 * name that belongs to one of Fulgur's own packages is loaded on demand (its import registers it),
 * so `strategy: "ddp"` works with nothing more than `npm install @fulgur/strategy-ddp`. Objects are
 * accepted wherever names are, checked by shape (DESIGN.md decision 11), as Lightning's `plugins`.
 */
import {
  type Accelerator,
  AcceleratorRegistry,
  type CheckpointIO,
  type ClusterEnvironment,
  type Precision,
  type Strategy,
  StrategyRegistry,
  UnknownPluginError,
  assertAccelerator,
  assertPrecision,
  assertStrategy,
  isCheckpointIO,
  isClusterEnvironment,
  isPrecision,
  notInstalledHint,
} from "@fulgur/core";
import { createPrecision, registerStrategies as registerKitStrategies } from "@fulgur/strategy-kit";
import { CpuAccelerator } from "./accelerators/cpuAccelerator";

export function registerBuiltins(): void {
  registerKitStrategies(StrategyRegistry);
  if (!AcceleratorRegistry.has("cpu")) {
    AcceleratorRegistry.register("cpu", () => new CpuAccelerator(), {
      description: "the pure-TypeScript CPU backend",
      package: "@fulgur/trainer",
    });
  }
}

/** What the user chose through the `precision` option and `plugins`. */
export interface ChosenPlugins {
  readonly precision: Precision;
  readonly checkpointIO: CheckpointIO | undefined;
  readonly cluster: ClusterEnvironment | undefined;
}

/** Sorts `plugins` by shape; a precision given both ways, or an object of no known kind, is an error. */
export function sortPlugins(precisionOption: string | object, plugins: readonly object[]): ChosenPlugins {
  let precision: Precision | undefined;
  let checkpointIO: CheckpointIO | undefined;
  let cluster: ClusterEnvironment | undefined;
  const once = <T>(current: T | undefined, value: T, what: string, i: number): T => {
    if (current !== undefined) throw new TypeError(`plugins[${i}]: a second ${what}; give one ${what} at most`);
    return value;
  };
  plugins.forEach((p, i) => {
    if (isPrecision(p)) precision = once(precision, p as Precision, "Precision", i);
    else if (isCheckpointIO(p)) checkpointIO = once(checkpointIO, p as CheckpointIO, "CheckpointIO", i);
    else if (isClusterEnvironment(p)) cluster = once(cluster, p as ClusterEnvironment, "ClusterEnvironment", i);
    else {
      const name = (p as { constructor?: { name?: string } }).constructor?.name ?? typeof p;
      throw new TypeError(
        `plugins[${i}]: a ${name} is not a Precision, CheckpointIO or ClusterEnvironment (checked by shape: members and contractVersion)`,
      );
    }
  });
  if (typeof precisionOption === "object") {
    assertPrecision(precisionOption, "precision");
    if (precision) throw new TypeError("precision: given both as the precision option and in plugins; give it once");
    precision = precisionOption as Precision;
  } else if (!precision) precision = createPrecision(precisionOption);
  else if (precisionOption !== "32-true") {
    throw new TypeError(`precision: got ${JSON.stringify(precisionOption)} and a Precision in plugins; give it once`);
  }
  return { precision, checkpointIO, cluster };
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
      throw new UnknownPluginError(`${kind} "${name}" ${notInstalledHint(pkg)}`, name, pkg);
    }
    throw new Error(`${kind} "${name}": loading ${pkg} failed: ${(err as Error).message}`);
  }
}

/** Imports the package that registers strategy `name` when it is one of Fulgur's own and not registered yet. */
export async function loadStrategyPackage(name: string): Promise<void> {
  registerBuiltins();
  await loadPackageFor("strategy", name);
}

export interface ResolvedStrategy {
  readonly strategy: Strategy;
  /** The checkpoint IO registered with the strategy's name, if any. */
  readonly checkpointIO: CheckpointIO | undefined;
}

export async function resolveStrategy(spec: string | object, options: Record<string, unknown>, worldSize: number): Promise<ResolvedStrategy> {
  registerBuiltins();
  if (typeof spec === "object") {
    assertStrategy(spec, "strategy");
    return { strategy: spec as Strategy, checkpointIO: undefined };
  }
  const name = spec === "auto" ? (worldSize > 1 ? "ddp" : "single_device") : spec;
  await loadPackageFor("strategy", name);
  const entry = StrategyRegistry.get(name);
  const io = entry.checkpointIO;
  return { strategy: StrategyRegistry.create(name, options), checkpointIO: typeof io === "function" ? io() : io };
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
