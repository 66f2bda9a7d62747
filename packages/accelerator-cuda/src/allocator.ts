/**
 * Stream-ordered device memory from the device's cudaMallocAsync pool (DESIGN.md, decision 3).
 *
 * Every allocation and free is queued on the compute stream, so a block freed by one op is reused by
 * the next op without a host synchronisation, and the pool's release threshold is set to "never"
 * so freed memory stays cached in the process instead of going back to the driver between steps
 * (PyTorch's caching allocator does the same job). `memoryStats()` counts bytes in live storages
 * (allocated), bytes the pool holds from the driver (reserved) and the highest `allocated` since the
 * last reset (peak). An allocation that fails first returns the cache to the driver and retries;
 * if it still fails, the error carries `memorySummary()` and the ways to need less memory.
 */
import { check, statusError } from "./check";
import type { Ptr } from "./ffi/cudart";
import {
  cudaErrorMemoryAllocation,
  cudaMemPoolAttrReleaseThreshold,
  cudaMemPoolAttrReservedMemCurrent,
  cudaMemPoolAttrReservedMemHigh,
  cudart,
} from "./ffi/cudart";
import { formatBytes } from "./format";
import type { Stream } from "./stream";

export interface MemoryStats {
  /** Bytes in live allocations. */
  readonly allocated: number;
  /** Bytes the pool holds from the device, live or cached. */
  readonly reserved: number;
  /** Highest `allocated` since the last resetPeak(). */
  readonly peak: number;
}

export const OOM_ADVICE =
  "To need less memory: use a smaller micro-batch (with gradient accumulation to keep the effective batch), " +
  "turn on activation checkpointing (checkpoint() or the 'fsdp_activation_checkpointing' strategy), " +
  "shard parameters, gradients and optimizer state with FSDP or ZeRO ('fsdp', 'deepspeed_stage_2', 'deepspeed_stage_3'), " +
  "or offload them to CPU memory ('fsdp_cpu_offload', 'deepspeed_stage_3_offload').";

export class CudaOutOfMemoryError extends Error {
  constructor(
    message: string,
    readonly requested: number,
    readonly summary: string,
  ) {
    super(message);
    this.name = "CudaOutOfMemoryError";
  }
}

export class DeviceAllocator {
  private allocatedBytes = 0;
  private peakBytes = 0;
  private liveBlocks = 0;
  private readonly pool: Ptr;

  constructor(
    readonly device: number,
    private readonly stream: Stream,
    /** Label for summaries, e.g. "cuda:0 (NVIDIA H100 80GB HBM3)". */
    private readonly label: string,
  ) {
    const rt = cudart();
    const out: [Ptr | null] = [null];
    check(rt.cudaDeviceGetDefaultMemPool(out, device), "cudaDeviceGetDefaultMemPool", "cudart", label);
    if (out[0] === null) throw new Error(`cudaDeviceGetDefaultMemPool returned no pool for ${label}`);
    this.pool = out[0];
    // UINT64_MAX: never give cached memory back to the driver at synchronisation points.
    const threshold = new BigUint64Array([0xffffffffffffffffn]);
    check(rt.cudaMemPoolSetAttribute(this.pool, cudaMemPoolAttrReleaseThreshold, threshold), "cudaMemPoolSetAttribute", "cudart", "release threshold");
  }

  /** A stream-ordered block of `bytes` bytes (0 bytes gives the null pointer). */
  alloc(bytes: number): Ptr {
    if (!Number.isSafeInteger(bytes) || bytes < 0) {
      throw new RangeError(`allocation size: got ${bytes}; expected a non-negative integer number of bytes`);
    }
    if (bytes === 0) return 0n;
    const rt = cudart();
    const out: [Ptr | null] = [null];
    let code = rt.cudaMallocAsync(out, bytes, this.stream.handle);
    if (code === cudaErrorMemoryAllocation) {
      // The pool may be holding freed blocks of the wrong sizes: wait for queued frees, hand the
      // cache back to the driver and try once more before giving up.
      rt.cudaGetLastError();
      this.stream.synchronize();
      check(rt.cudaMemPoolTrimTo(this.pool, 0), "cudaMemPoolTrimTo");
      code = rt.cudaMallocAsync(out, bytes, this.stream.handle);
    }
    if (code === cudaErrorMemoryAllocation) {
      rt.cudaGetLastError();
      const summary = this.memorySummary();
      throw new CudaOutOfMemoryError(
        `CUDA out of memory on ${this.label}: could not allocate ${formatBytes(bytes)} (cudaMallocAsync: cudaErrorMemoryAllocation).\n` +
          `${summary}\n${OOM_ADVICE}`,
        bytes,
        summary,
      );
    }
    if (code !== 0) throw statusError(code, "cudaMallocAsync", "cudart", `${formatBytes(bytes)} on ${this.label}`);
    if (out[0] === null) throw new Error(`cudaMallocAsync returned no memory for ${formatBytes(bytes)}`);
    this.allocatedBytes += bytes;
    this.liveBlocks++;
    if (this.allocatedBytes > this.peakBytes) this.peakBytes = this.allocatedBytes;
    return out[0];
  }

  /** Returns a block to the pool in stream order: work queued before this call may still use it. */
  free(ptr: Ptr, bytes: number): void {
    if (bytes === 0 || ptr === 0n) return;
    check(cudart().cudaFreeAsync(ptr, this.stream.handle), "cudaFreeAsync", "cudart", this.label);
    this.allocatedBytes -= bytes;
    this.liveBlocks--;
  }

  private poolAttribute(attr: number): number {
    const v = new BigUint64Array(1);
    check(cudart().cudaMemPoolGetAttribute(this.pool, attr, v), "cudaMemPoolGetAttribute");
    return Number(v[0]);
  }

  memoryStats(): MemoryStats {
    return { allocated: this.allocatedBytes, reserved: this.poolAttribute(cudaMemPoolAttrReservedMemCurrent), peak: this.peakBytes };
  }

  resetPeak(): void {
    this.peakBytes = this.allocatedBytes;
  }

  /** Returns cached, unused memory to the driver (after the stream's queued frees have run). */
  emptyCache(): void {
    this.stream.synchronize();
    check(cudart().cudaMemPoolTrimTo(this.pool, 0), "cudaMemPoolTrimTo");
  }

  /** A few lines saying where the device's memory is: for humans, in OOM errors and `fulgur env`. */
  memorySummary(): string {
    let reserved = "unknown";
    let reservedHigh = "unknown";
    let device = "unknown";
    try {
      const r = this.poolAttribute(cudaMemPoolAttrReservedMemCurrent);
      reserved = `${formatBytes(r)} (cached for reuse: ${formatBytes(Math.max(0, r - this.allocatedBytes))})`;
      reservedHigh = formatBytes(this.poolAttribute(cudaMemPoolAttrReservedMemHigh));
      const free: [number | bigint] = [0];
      const total: [number | bigint] = [0];
      check(cudart().cudaMemGetInfo(free, total), "cudaMemGetInfo");
      device = `${formatBytes(Number(free[0]))} free of ${formatBytes(Number(total[0]))}`;
    } catch {
      // A summary is written while something already went wrong; it must not throw itself.
    }
    return formatSummary(this.label, {
      allocated: this.allocatedBytes,
      blocks: this.liveBlocks,
      peak: this.peakBytes,
      reserved,
      reservedHigh,
      device,
    });
  }
}

/** The text of memorySummary(), separated so it can be tested without a GPU. */
export function formatSummary(
  label: string,
  s: { allocated: number; blocks: number; peak: number; reserved: string; reservedHigh: string; device: string },
): string {
  return [
    `CUDA memory on ${label}:`,
    `  allocated (live tensors): ${formatBytes(s.allocated)} in ${s.blocks} block${s.blocks === 1 ? "" : "s"}`,
    `  peak allocated:           ${formatBytes(s.peak)}`,
    `  reserved by the pool:     ${s.reserved}`,
    `  pool high-water mark:     ${s.reservedHigh}`,
    `  device memory:            ${s.device}`,
  ].join("\n");
}
