/**
 * Deterministic memory (DESIGN.md, decision 2). Storage is reference-counted by the Tensor objects
 * (and autograd's saved handles) that point at it and is returned to its backend the moment the
 * count reaches zero, never by the garbage collector. Scopes dispose every tensor created inside
 * them that was not returned or kept, so a training step cannot leak device memory.
 */
import type { Backend, Storage } from "./backend";
import { RangeVersions } from "./versions";

export interface DeviceMemoryStats {
  /** Bytes held by live storages. */
  liveBytes: number;
  /** Highest liveBytes since the last reset. */
  peakBytes: number;
  /** Live Tensor objects (views count separately from the storage they share). */
  liveTensors: number;
  liveStorages: number;
}

const stats = new Map<string, DeviceMemoryStats>();

function statsFor(device: string): DeviceMemoryStats {
  let s = stats.get(device);
  if (!s) {
    s = { liveBytes: 0, peakBytes: 0, liveTensors: 0, liveStorages: 0 };
    stats.set(device, s);
  }
  return s;
}

/** Per-device counters; `memoryStats("cpu")` for one device, `memoryStats()` for all. */
export function memoryStats(): Record<string, DeviceMemoryStats>;
export function memoryStats(device: string): DeviceMemoryStats;
export function memoryStats(device?: string): DeviceMemoryStats | Record<string, DeviceMemoryStats> {
  if (device !== undefined) return { ...statsFor(device) };
  return Object.fromEntries([...stats.entries()].map(([k, v]) => [k, { ...v }]));
}

export function resetPeakMemory(device?: string): void {
  for (const [k, s] of stats) if (device === undefined || k === device) s.peakBytes = s.liveBytes;
}

/** A backend storage with a reference count. */
export class StorageRef {
  private refs = 1;
  readonly bytes: number;
  private ranges: RangeVersions | null = null;
  /** Null while the memory is released (`releaseMemory`); the object and its tensors stay. */
  private memory: Storage | null;
  private readonly dtype: Storage["dtype"];
  private readonly length: number;

  constructor(
    storage: Storage,
    readonly backend: Backend,
  ) {
    this.memory = storage;
    this.dtype = storage.dtype;
    this.length = storage.length;
    // The storage's own figure: a meta storage holds no bytes.
    this.bytes = storage.byteLength;
    const s = statsFor(backend.device);
    s.liveBytes += this.bytes;
    s.liveStorages++;
    if (s.liveBytes > s.peakBytes) s.peakBytes = s.liveBytes;
  }

  get storage(): Storage {
    if (this.memory === null) {
      throw new Error(
        `storage of ${this.length} ${this.dtype} elements on ${this.backend.device}: its memory was released ` +
          "(the gathered parameters of a sharded unit, used outside the unit's compute); it is restored when the unit is gathered again",
      );
    }
    return this.memory;
  }

  /** False between `releaseMemory` and `restoreMemory`. */
  get hasMemory(): boolean {
    return this.memory !== null;
  }

  /**
   * Returns the memory to the backend while the storage object (and every tensor viewing it)
   * stays: how a sharded unit frees its gathered parameters after forward although autograd
   * saved views of them for backward (PyTorch FSDP resizes the storage to zero). Reading before
   * `restoreMemory` throws. Idempotent.
   */
  releaseMemory(): void {
    if (this.memory === null || this.refs <= 0) return;
    const s = statsFor(this.backend.device);
    s.liveBytes -= this.bytes;
    this.backend.free(this.memory);
    this.memory = null;
  }

  /** Allocates memory again (contents undefined; every range counts as written). Idempotent. */
  restoreMemory(): void {
    if (this.memory !== null || this.refs <= 0) return;
    this.memory = this.backend.allocForOverwrite?.(this.dtype, this.length) ?? this.backend.alloc(this.dtype, this.length);
    const s = statsFor(this.backend.device);
    s.liveBytes += this.bytes;
    if (s.liveBytes > s.peakBytes) s.peakBytes = s.liveBytes;
    this.ranges?.write(0, this.length - 1);
  }

  get refCount(): number {
    return this.refs;
  }

  /**
   * Write versions per element range, stamped by every in-place write through the tensor API (and
   * `markModified()`): whoever keeps a value derived from part of this memory (autocast's
   * low-precision parameter copies) checks that part is unchanged. See [Note: range versions].
   */
  get versions(): RangeVersions {
    return (this.ranges ??= new RangeVersions(this.storage.length));
  }

  /** The version of the whole storage: changes on a write to any part of it. */
  get version(): number {
    return this.ranges === null ? 0 : this.ranges.latest;
  }

  retain(): void {
    if (this.refs <= 0) throw new Error("internal: retain() on a freed storage");
    this.refs++;
  }

  release(): void {
    if (this.refs <= 0) throw new Error("internal: release() on a freed storage");
    if (--this.refs === 0) {
      const s = statsFor(this.backend.device);
      s.liveStorages--;
      if (this.memory === null) return;
      s.liveBytes -= this.bytes;
      this.backend.free(this.memory);
      this.memory = null;
    }
  }
}

export function countTensor(device: string, delta: number): void {
  statsFor(device).liveTensors += delta;
}

/** Anything that can be disposed and tracked by a scope. */
export interface Disposable {
  dispose(): void;
  readonly isDisposed: boolean;
}

interface Scope {
  tracked: Disposable[];
  kept: Set<Disposable>;
}

const scopes: Scope[] = [];

export function trackInScope(t: Disposable): void {
  const s = scopes[scopes.length - 1];
  if (s) s.tracked.push(t);
}

/** Marks a tensor to survive the innermost scope (it moves to the outer scope, if any). */
export function keepInScope(t: Disposable): void {
  const s = scopes[scopes.length - 1];
  if (s) s.kept.add(t);
}

/** Removes a tensor from every open scope: it now lives until disposed by hand. */
export function untrack(t: Disposable): void {
  for (const s of scopes) {
    const i = s.tracked.lastIndexOf(t);
    if (i >= 0) s.tracked.splice(i, 1);
    s.kept.delete(t);
  }
}

function collectResult(value: unknown, into: Set<unknown>, depth = 0): void {
  if (value === null || typeof value !== "object" || depth > 8) return;
  if (isDisposable(value)) {
    into.add(value);
    return;
  }
  if (Array.isArray(value)) for (const v of value) collectResult(v, into, depth + 1);
  else if (value instanceof Map) for (const v of value.values()) collectResult(v, into, depth + 1);
  else if (Object.getPrototypeOf(value) === Object.prototype) {
    for (const v of Object.values(value)) collectResult(v, into, depth + 1);
  }
}

function isDisposable(v: object): v is Disposable {
  return typeof (v as Disposable).dispose === "function" && "isDisposed" in v;
}

function openScope(): Scope {
  const s: Scope = { tracked: [], kept: new Set() };
  scopes.push(s);
  return s;
}

function closeScope(s: Scope, result: unknown): void {
  const top = scopes.pop();
  if (top !== s) throw new Error("internal: scopes closed out of order (an async function inside scope()? use scopeAsync)");
  const survivors = new Set<unknown>();
  collectResult(result, survivors);
  const parent = scopes[scopes.length - 1];
  for (const t of s.tracked) {
    if (t.isDisposed) continue;
    if (survivors.has(t) || s.kept.has(t)) {
      if (parent) parent.tracked.push(t);
    } else t.dispose();
  }
}

/**
 * Runs `fn` and disposes every tensor it created except those it returns (also inside arrays and
 * plain objects) and those it `keep()`-ed. Returned tensors belong to the enclosing scope.
 */
export function scope<T>(fn: () => T): T {
  const s = openScope();
  let result: T;
  try {
    result = fn();
  } catch (err) {
    closeScope(s, undefined);
    throw err;
  }
  if (result instanceof Promise) {
    closeScope(s, undefined);
    throw new Error("scope(fn): fn returned a Promise; use scopeAsync for async functions");
  }
  closeScope(s, result);
  return result;
}

/**
 * The async form of `scope`. Tensors made by other async work that runs while this one awaits are
 * tracked here too, so keep concurrent async scopes apart (the Trainer runs one step at a time).
 */
export async function scopeAsync<T>(fn: () => Promise<T>): Promise<T> {
  const s = openScope();
  let result: T;
  try {
    result = await fn();
  } catch (err) {
    removeScope(s);
    throw err;
  }
  removeScope(s, result);
  return result;
}

function removeScope(s: Scope, result?: unknown): void {
  const i = scopes.lastIndexOf(s);
  if (i < 0) return;
  // Inner scopes opened (and not closed) during the await would be orphaned; fold them in.
  while (scopes.length - 1 > i) {
    const inner = scopes.pop()!;
    s.tracked.push(...inner.tracked);
    for (const k of inner.kept) s.kept.add(k);
  }
  closeScope(s, result);
}

export function scopeDepth(): number {
  return scopes.length;
}
