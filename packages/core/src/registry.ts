/**
 * String registries (Lightning's StrategyRegistry, for Fulgur): a name maps to a factory, a
 * description and default options. Registration checks the factory's product by shape at once, so a
 * plugin that is not a strategy fails where it is registered, not deep inside a training run.
 */
import { assertAccelerator, assertCheckpointIO, assertStrategy } from "./conformance";
import { KNOWN_ACCELERATOR_PACKAGES, KNOWN_STRATEGY_PACKAGES } from "./knownPackages";
import type { Accelerator } from "./accelerator";
import type { CheckpointIO } from "./checkpointIO";
import type { Strategy } from "./strategy";

export type PluginOptions = Record<string, unknown>;
export type PluginFactory<T> = (options: PluginOptions) => T;

export interface RegisterOptions {
  readonly description?: string;
  /** Options the factory receives unless the user overrides them. */
  readonly defaults?: PluginOptions;
  /** The package that provides the entry, shown by `fulgur strategies`. */
  readonly package?: string;
  /** Replace an entry registered under the same name. */
  readonly override?: boolean;
  /**
   * The checkpoint IO strategies made from this entry use unless the user picks one (Lightning's
   * `StrategyRegistry.register(name, cls, checkpoint_io=...)`): an object, or a factory of one.
   */
  readonly checkpointIO?: CheckpointIO | (() => CheckpointIO);
}

export interface RegistryEntry<T> {
  readonly name: string;
  readonly factory: PluginFactory<T>;
  readonly description: string;
  readonly defaults: Readonly<PluginOptions>;
  readonly package: string | undefined;
  readonly checkpointIO: CheckpointIO | (() => CheckpointIO) | undefined;
}

export class UnknownPluginError extends Error {
  constructor(
    message: string,
    readonly pluginName: string,
    /** The package that provides the name, when it is one of Fulgur's own. */
    readonly missingPackage?: string,
  ) {
    super(message);
    this.name = "UnknownPluginError";
  }
}

export class Registry<T> {
  private readonly entries = new Map<string, RegistryEntry<T>>();

  constructor(
    /** "strategy" or "accelerator", for messages. */
    readonly kind: string,
    private readonly assertShape: (value: unknown, label: string) => void,
    private readonly knownPackages: Readonly<Record<string, string>>,
  ) {}

  register(name: string, factory: PluginFactory<T>, options: RegisterOptions = {}): void {
    if (typeof name !== "string" || !/^[A-Za-z0-9_.:-]+$/.test(name)) {
      throw new TypeError(
        `${this.kind} name: got ${JSON.stringify(name)}; expected letters, digits, '_', '.', ':' or '-'`,
      );
    }
    if (typeof factory !== "function") {
      throw new TypeError(`${this.kind} "${name}": factory must be a function returning a ${this.kind}, got ${typeof factory}`);
    }
    if (this.entries.has(name) && !options.override) {
      const owner = this.entries.get(name)!.package;
      throw new Error(
        `${this.kind} "${name}" is already registered${owner ? ` by ${owner}` : ""}; pass { override: true } to replace it`,
      );
    }
    const defaults = Object.freeze({ ...(options.defaults ?? {}) });
    // Construction must be cheap and side-effect free, so building a probe here costs little and
    // catches a factory that returns something other than a plugin at the point of registration.
    let probe: unknown;
    try {
      probe = factory({ ...defaults });
    } catch (err) {
      throw new Error(`${this.kind} "${name}": the factory threw while being checked: ${(err as Error).message}`);
    }
    this.assertShape(probe, `${this.kind} "${name}"`);
    const io = options.checkpointIO;
    if (io !== undefined && typeof io !== "function") assertCheckpointIO(io, `${this.kind} "${name}" checkpointIO`);
    this.entries.set(name, {
      name,
      factory,
      description: options.description ?? "",
      defaults,
      package: options.package,
      checkpointIO: io,
    });
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  get(name: string): RegistryEntry<T> {
    const entry = this.entries.get(name);
    if (entry) return entry;
    const pkg = this.knownPackages[name];
    if (pkg) throw new UnknownPluginError(`${this.kind} "${name}" ${notInstalledHint(pkg)}`, name, pkg);
    const names = this.available();
    const close = closestName(name, [...names, ...Object.keys(this.knownPackages)]);
    const hint = close ? ` Did you mean "${close}"${this.packageFor(close) ? ` (from ${this.packageFor(close)})` : ""}?` : "";
    throw new UnknownPluginError(
      `${this.kind} "${name}" is not registered.${hint} Registered ${this.kind} names: ${names.length ? names.join(", ") : "(none)"}`,
      name,
    );
  }

  /** Builds the plugin with the entry's defaults overridden by `options`, and checks what came back. */
  create(name: string, options: PluginOptions = {}): T {
    const entry = this.get(name);
    const value = entry.factory({ ...entry.defaults, ...options });
    this.assertShape(value, `${this.kind} "${name}"`);
    return value;
  }

  /** The package that provides a name, for names of Fulgur's own packages. */
  packageFor(name: string): string | undefined {
    return this.entries.get(name)?.package ?? this.knownPackages[name];
  }

  available(): string[] {
    return [...this.entries.keys()].sort();
  }

  list(): RegistryEntry<T>[] {
    return this.available().map((n) => this.entries.get(n)!);
  }

  remove(name: string): boolean {
    return this.entries.delete(name);
  }
}

/** How to get a first-party package: from npm once published, from the workspace before. */
export function notInstalledHint(pkg: string): string {
  return (
    `is provided by ${pkg}, which is not installed or not loaded: run \`npm install ${pkg}\` ` +
    `(inside the Fulgur repository, where the packages are not published yet, \`npm ci && npm run build\` links every workspace package)`
  );
}

/** The candidate nearest to `name` by edit distance, when near enough to be a likely typo. */
export function closestName(name: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const c of new Set(candidates)) {
    const d = editDistance(name.toLowerCase(), c.toLowerCase());
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best !== undefined && bestDistance <= Math.max(2, Math.floor(name.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length];
}

// One registry per process even when several copies of @fulgur/core are installed: the copies
// share it through a global symbol, so a third-party plugin built against another copy still
// registers where the Trainer looks.
const GLOBAL_KEY = Symbol.for("@fulgur/core/registries@2");

interface Registries {
  strategies: Registry<Strategy>;
  accelerators: Registry<Accelerator>;
}

function registries(): Registries {
  const g = globalThis as unknown as Record<symbol, Registries | undefined>;
  let r = g[GLOBAL_KEY];
  if (!r) {
    r = {
      strategies: new Registry<Strategy>("strategy", assertStrategy, KNOWN_STRATEGY_PACKAGES),
      accelerators: new Registry<Accelerator>("accelerator", assertAccelerator, KNOWN_ACCELERATOR_PACKAGES),
    };
    g[GLOBAL_KEY] = r;
  }
  return r;
}

export const StrategyRegistry: Registry<Strategy> = registries().strategies;
export const AcceleratorRegistry: Registry<Accelerator> = registries().accelerators;
