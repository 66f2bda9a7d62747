/**
 * The disk tier of the offload (DeepSpeed's ZeRO-Infinity "nvme" device): host tensors whose
 * memory is written to a file and released while they are not needed, and read back (into newly
 * allocated shared memory) when they are. Each rank has its own directory, made fresh under the
 * configured path at start and removed at teardown; the directory removed is always the one this
 * object made (its name is kept in memory, never read from a file).
 *
 * A tensor here owns its whole storage (an optimizer state, a unit's master slice): releasing the
 * storage releases the tensor and every view of it. Each has a region of one swap file, at an
 * offset aligned to the block size. A tensor read only (a slice gathered for compute) goes back to
 * disk without a write: the file already holds it.
 */
import { closeSync, mkdtempSync, openSync, rmSync } from "node:fs";
import { join } from "node:path";
import { type Tensor, hostBytesOf, sharedHostMemory } from "@fulgur/tensor";
import { IoThreads, type Pending } from "./ioThreads";

export interface NvmeSettings {
  /** The directory under which each rank makes its own (nvme_path). */
  readonly path: string;
  /** I/O worker threads (aio.thread_count). */
  readonly threads: number;
  /** Requests in flight at most (buffer_count). */
  readonly bufferCount: number;
  /** Bytes per request at most (buffer_size). */
  readonly bufferSize: number;
  /** File offsets are multiples of this (aio.block_size). */
  readonly blockSize: number;
}

interface Region {
  readonly position: number;
  readonly bytes: number;
  /** The file holds the tensor's current value. */
  written: boolean;
}

/** Reads or writes started for some tensors, finished by `finish`. */
export interface Transfer {
  readonly tensors: readonly Tensor[];
  readonly pending: readonly Pending[];
  readonly kind: "fetch" | "evict";
}

export class NvmeTier {
  /** This rank's directory (made here, removed by `dispose`). */
  readonly directory: string;
  readonly file: string;
  private fd: number | null;
  private readonly io: IoThreads;
  private readonly regions = new Map<Tensor, Region>();
  private end = 0;

  constructor(
    readonly settings: NvmeSettings,
    rank: number,
  ) {
    this.directory = mkdtempSync(join(settings.path, `fulgur-rank${rank}-`));
    this.file = join(this.directory, "swap.bin");
    this.fd = openSync(this.file, "w+");
    this.io = new IoThreads(settings);
  }

  /** Whether `t` is on disk (its memory released) now. */
  onDisk(t: Tensor): boolean {
    return this.regions.has(t) && !t.storageRef.hasMemory;
  }

  /** Bytes of the swap file in use (regions made so far). */
  get fileBytes(): number {
    return this.end;
  }

  private regionOf(t: Tensor): Region {
    let r = this.regions.get(t);
    if (!r) {
      const bytes = t.storageRef.bytes;
      if (t.offset !== 0 || hostBytesOf(t).byteLength !== bytes) throw new Error("NVMe offload: a tensor swapped to disk must own its whole storage");
      const block = this.settings.blockSize;
      r = { position: this.end, bytes, written: false };
      this.end += Math.ceil(bytes / block) * block;
      this.regions.set(t, r);
    }
    return r;
  }

  private get handle(): number {
    if (this.fd === null) throw new Error(`NVMe offload: the swap directory ${this.directory} was removed (teardown)`);
    return this.fd;
  }

  /**
   * Starts writing the tensors to their regions (all of them when `changed`, else only those the
   * file does not hold yet). `finish` waits and releases their memory.
   */
  startEvict(tensors: readonly Tensor[], changed: boolean): Transfer {
    const pending: Pending[] = [];
    const fd = this.handle;
    for (const t of tensors) {
      if (!t.storageRef.hasMemory) continue;
      const r = this.regionOf(t);
      if (changed || !r.written) pending.push(...this.io.submit("write", fd, hostBytesOf(t), r.position));
    }
    return { tensors, pending, kind: "evict" };
  }

  /** Starts reading the tensors that are on disk back into (newly allocated, shared) memory. */
  startFetch(tensors: readonly Tensor[]): Transfer {
    const pending: Pending[] = [];
    const fd = this.handle;
    for (const t of tensors) {
      const r = this.regions.get(t);
      if (!r || t.storageRef.hasMemory) continue;
      sharedHostMemory(() => t.storageRef.restoreMemory());
      pending.push(...this.io.submit("read", fd, hostBytesOf(t), r.position));
    }
    return { tensors, pending, kind: "fetch" };
  }

  /** Waits for a transfer; an eviction then releases the tensors' memory. */
  finish(t: Transfer): void {
    this.io.wait(t.pending);
    if (t.kind === "fetch") return;
    for (const x of t.tensors) {
      const r = this.regions.get(x);
      if (!r || !x.storageRef.hasMemory) continue;
      r.written = true;
      x.storageRef.releaseMemory();
    }
  }

  fetch(tensors: readonly Tensor[]): void {
    this.finish(this.startFetch(tensors));
  }

  evict(tensors: readonly Tensor[], changed: boolean): void {
    this.finish(this.startEvict(tensors, changed));
  }

  /** Forgets tensors that are gone (an optimizer state replaced by a load); their regions are not reused. */
  forget(tensors: Iterable<Tensor>): void {
    for (const t of tensors) this.regions.delete(t);
  }

  /** Stops the I/O threads, closes the file and removes this rank's directory. Idempotent. */
  dispose(): void {
    if (this.fd === null) return;
    try {
      this.io.stop();
    } finally {
      closeSync(this.fd);
      this.fd = null;
      rmSync(this.directory, { recursive: true, force: true });
    }
  }
}
