/**
 * Host side of kernels/accumulate.cu: dsts[i] += srcs[i] over many contiguous float32 pairs in one
 * launch (Backend.addMany). The pairs are cut into chunks of at most ACCUMULATE_CHUNK elements so a
 * large leaf spreads over blocks; the chunk table is uploaded through the staging ring.
 */
import type { View } from "@fulgur/tensor";
import type { CudaBackend } from "../cudaBackend";
import { ArgPack } from "../launch";
import { ptrOf } from "../storage";
import { withDeviceTable } from "./common";
import { isContiguous, numelOf } from "./layout";

/** struct AccChunk { u64 dst; u64 src; i64 n; } */
export const ACCUMULATE_CHUNK_BYTES = 24;
/** Elements a block adds per chunk. */
export const ACCUMULATE_CHUNK = 1 << 16;
const F32 = 4;

/** The chunk table for pairs of device addresses and lengths (exported for tests of its layout). */
export function accumulateTable(pairs: readonly { dst: bigint; src: bigint; n: number }[]): Uint8Array {
  const rows: { dst: bigint; src: bigint; n: number }[] = [];
  for (const p of pairs) {
    for (let s = 0; s < p.n; s += ACCUMULATE_CHUNK) {
      rows.push({ dst: p.dst + BigInt(s * F32), src: p.src + BigInt(s * F32), n: Math.min(ACCUMULATE_CHUNK, p.n - s) });
    }
  }
  const bytes = new Uint8Array(rows.length * ACCUMULATE_CHUNK_BYTES);
  const dv = new DataView(bytes.buffer);
  rows.forEach((r, i) => {
    const o = i * ACCUMULATE_CHUNK_BYTES;
    dv.setBigUint64(o, r.dst, true);
    dv.setBigUint64(o + 8, r.src, true);
    dv.setBigInt64(o + 16, BigInt(r.n), true);
  });
  return bytes;
}

export function addMany(b: CudaBackend, dsts: readonly View[], srcs: readonly View[]): void {
  if (dsts.length !== srcs.length) throw new RangeError(`addMany: ${dsts.length} destinations but ${srcs.length} sources`);
  const pairs: { dst: bigint; src: bigint; n: number }[] = [];
  const seen = new Set<bigint>();
  dsts.forEach((d, i) => {
    const s = srcs[i];
    for (const [v, what] of [
      [d, "destination"],
      [s, "source"],
    ] as const) {
      if (v.storage.dtype !== "float32") throw new RangeError(`addMany: ${what} ${i} is ${v.storage.dtype}; only float32 is supported`);
      if (!isContiguous(v.shape, v.strides)) throw new RangeError(`addMany: ${what} ${i} must be contiguous`);
    }
    const n = numelOf(d.shape);
    if (numelOf(s.shape) !== n) throw new RangeError(`addMany: destination ${i} has ${n} elements but its source has ${numelOf(s.shape)}`);
    const dst = ptrOf(d, b);
    if (seen.has(dst)) throw new RangeError(`addMany: destination ${i} appears twice`);
    seen.add(dst);
    if (n > 0) pairs.push({ dst, src: ptrOf(s, b), n });
  });
  if (pairs.length === 0) return;
  const table = accumulateTable(pairs);
  const count = table.length / ACCUMULATE_CHUNK_BYTES;
  const ctx = b.ctx;
  withDeviceTable(b, table, (ptr) => {
    const grid = Math.max(1, Math.min(count, ctx.props.multiProcessorCount * 8));
    ctx.module("accumulate").launch("add_multi", grid, 256, 0, ctx.compute, ArgPack.begin().ptr(ptr).i32(count));
  });
}
