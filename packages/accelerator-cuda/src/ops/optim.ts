/**
 * Host side of kernels/adamw.cu and kernels/norm.cu: builds the chunk table (one row per slice of at
 * most CHUNK elements of one parameter), uploads it through the pinned staging ring, and queues one
 * launch for all parameters.
 */
import type { AdamWHyper, View } from "@fulgur/tensor";
import type { CudaBackend } from "../cudaBackend";
import { ArgPack } from "../launch";
import { withDeviceTable } from "./common";
import { ptrOf } from "../storage";
import { DTYPE_CODE, itemsizeOf } from "./dtypes";
import { isContiguous, numelOf } from "./layout";

/** Elements per table row: large enough to amortise a block, small enough to spread a big tensor over SMs. */
export const CHUNK = 1 << 16;
/** Elements per block-sized tile of a chunk (ADAMW_TILE in kernels/adamw.cu); CHUNK is a whole number of them. */
export const ADAMW_TILE = 4096;
/** Tiles per chunk (ADAMW_TILES_PER_CHUNK in kernels/adamw.cu). */
export const ADAMW_TILES_PER_CHUNK = CHUNK / ADAMW_TILE;
/** struct AdamWChunk { u64 p, g, m, v, lp; i64 n; int pdt, gdt, mdt, vdt, ldt, pad; } */
export const ADAMW_CHUNK_BYTES = 72;
/** struct NormChunk { u64 p; i64 n; int dt; int pad; } */
export const NORM_CHUNK_BYTES = 24;

/**
 * Blocks for adamw_multi: about four waves of 256-thread blocks (four resident an SM at its 64
 * registers a thread), grid-striding over the tiles; fewer when there are fewer tiles.
 */
export function adamwGrid(chunks: number, multiProcessorCount: number): number {
  return Math.max(1, Math.min(chunks * ADAMW_TILES_PER_CHUNK, multiProcessorCount * 16));
}

function requireContiguous(v: View, what: string, i: number): void {
  if (!isContiguous(v.shape, v.strides)) throw new RangeError(`adamw: ${what}[${i}] must be contiguous`);
}

/** The AdamW chunk table as bytes (exported for tests of its layout). */
export interface AdamWEntry {
  readonly p: bigint;
  readonly g: bigint;
  readonly m: bigint;
  readonly v: bigint;
  readonly n: number;
  readonly dts: readonly [number, number, number, number];
  readonly sizes: readonly [number, number, number, number];
  /** The low-precision copy written beside p: address, dtype code, item size. */
  readonly lp?: { readonly ptr: bigint; readonly dt: number; readonly size: number };
}

export function adamwTable(entries: readonly AdamWEntry[]): Uint8Array {
  const rows: { base: (typeof entries)[number]; start: number; n: number }[] = [];
  for (const e of entries) for (let s = 0; s < e.n; s += CHUNK) rows.push({ base: e, start: s, n: Math.min(CHUNK, e.n - s) });
  const bytes = new Uint8Array(rows.length * ADAMW_CHUNK_BYTES);
  const dv = new DataView(bytes.buffer);
  rows.forEach((r, i) => {
    const o = i * ADAMW_CHUNK_BYTES;
    const e = r.base;
    dv.setBigUint64(o, e.p + BigInt(r.start * e.sizes[0]), true);
    dv.setBigUint64(o + 8, e.g + BigInt(r.start * e.sizes[1]), true);
    dv.setBigUint64(o + 16, e.m + BigInt(r.start * e.sizes[2]), true);
    dv.setBigUint64(o + 24, e.v + BigInt(r.start * e.sizes[3]), true);
    dv.setBigUint64(o + 32, e.lp ? e.lp.ptr + BigInt(r.start * e.lp.size) : 0n, true);
    dv.setBigInt64(o + 40, BigInt(r.n), true);
    for (let k = 0; k < 4; k++) dv.setInt32(o + 48 + 4 * k, e.dts[k], true);
    dv.setInt32(o + 64, e.lp ? e.lp.dt : 0, true);
    dv.setInt32(o + 68, 0, true);
  });
  return bytes;
}

export function adamw(
  b: CudaBackend,
  params: View[],
  grads: View[],
  expAvg: View[],
  expAvgSq: View[],
  hyper: AdamWHyper,
  lowPrecision?: readonly (View | null)[],
): void {
  const n = params.length;
  if (grads.length !== n || expAvg.length !== n || expAvgSq.length !== n) {
    throw new RangeError(
      `adamw: params, grads, expAvg and expAvgSq must have equal lengths; got ${n}, ${grads.length}, ${expAvg.length}, ${expAvgSq.length}`,
    );
  }
  for (const [k, v] of Object.entries({ lr: hyper.lr, beta1: hyper.beta1, beta2: hyper.beta2, eps: hyper.eps, weightDecay: hyper.weightDecay })) {
    if (!Number.isFinite(v)) throw new RangeError(`adamw: ${k} must be a finite number, got ${v}`);
  }
  if (!Number.isInteger(hyper.step) || hyper.step < 1) throw new RangeError(`adamw: step must be an integer >= 1, got ${hyper.step}`);
  if (lowPrecision && lowPrecision.length !== n) throw new RangeError(`adamw: lowPrecision has ${lowPrecision.length} entries; expected ${n}`);
  const entries: AdamWEntry[] = [];
  for (let i = 0; i < n; i++) {
    const views = [params[i], grads[i], expAvg[i], expAvgSq[i]] as const;
    const len = numelOf(params[i].shape);
    views.forEach((v, k) => {
      requireContiguous(v, ["params", "grads", "expAvg", "expAvgSq"][k], i);
      if (numelOf(v.shape) !== len) throw new RangeError(`adamw: tensor ${i} has ${len} parameters but ${["params", "grads", "expAvg", "expAvgSq"][k]} has ${numelOf(v.shape)}`);
    });
    if (len === 0) continue;
    const lp = lowPrecision?.[i] ?? null;
    if (lp) {
      requireContiguous(lp, "lowPrecision", i);
      if (numelOf(lp.shape) !== len) throw new RangeError(`adamw: tensor ${i} has ${len} parameters but lowPrecision has ${numelOf(lp.shape)}`);
    }
    entries.push({
      lp: lp ? { ptr: ptrOf(lp, b), dt: DTYPE_CODE[lp.storage.dtype], size: itemsizeOf(lp.storage.dtype) } : undefined,
      p: ptrOf(views[0], b),
      g: ptrOf(views[1], b),
      m: ptrOf(views[2], b),
      v: ptrOf(views[3], b),
      n: len,
      dts: views.map((v) => DTYPE_CODE[v.storage.dtype]) as unknown as [number, number, number, number],
      sizes: views.map((v) => itemsizeOf(v.storage.dtype)) as unknown as [number, number, number, number],
    });
  }
  if (entries.length === 0) return;
  const table = adamwTable(entries);
  const count = table.length / ADAMW_CHUNK_BYTES;
  const ctx = b.ctx;
  withDeviceTable(b, table, (ptr) => {
    const a = ArgPack.begin()
      .ptr(ptr)
      .i32(count)
      .f64(hyper.lr)
      .f64(hyper.beta1)
      .f64(hyper.beta2)
      .f64(hyper.eps)
      .f64(1 - hyper.lr * hyper.weightDecay)
      .f64(1 - Math.pow(hyper.beta1, hyper.step))
      .f64(1 - Math.pow(hyper.beta2, hyper.step))
      .f64(hyper.maximize ? -1 : 1);
    ctx.module("adamw").launch("adamw_multi", adamwGrid(count, ctx.props.multiProcessorCount), 256, 0, ctx.compute, a);
  });
}

/** out[0] = sqrt(sum over views of sum(x^2)); deterministic (see norm.cu). */
export function globalNorm(b: CudaBackend, views: readonly View[], out: View): void {
  const rows: { p: bigint; n: number; dt: number }[] = [];
  views.forEach((v, i) => {
    if (!isContiguous(v.shape, v.strides)) throw new RangeError(`globalNorm: tensor ${i} must be contiguous`);
    const n = numelOf(v.shape);
    const p = ptrOf(v, b);
    const size = itemsizeOf(v.storage.dtype);
    for (let s = 0; s < n; s += CHUNK) rows.push({ p: p + BigInt(s * size), n: Math.min(CHUNK, n - s), dt: DTYPE_CODE[v.storage.dtype] });
  });
  const ctx = b.ctx;
  if (rows.length === 0) {
    b.fill(out, 0);
    return;
  }
  const table = new Uint8Array(rows.length * NORM_CHUNK_BYTES);
  const dv = new DataView(table.buffer);
  rows.forEach((r, i) => {
    dv.setBigUint64(i * NORM_CHUNK_BYTES, r.p, true);
    dv.setBigInt64(i * NORM_CHUNK_BYTES + 8, BigInt(r.n), true);
    dv.setInt32(i * NORM_CHUNK_BYTES + 16, r.dt, true);
    dv.setInt32(i * NORM_CHUNK_BYTES + 20, 0, true);
  });
  const partials = b.alloc("float64", rows.length);
  try {
    withDeviceTable(b, table, (ptr) => {
      const mod = ctx.module("norm");
      mod.launch("sumsq_partial", Math.min(rows.length, 65535 * 16), 256, 0, ctx.compute, ArgPack.begin().ptr(ptr).i32(rows.length).ptr(partials.ptr));
      const a = ArgPack.begin().ptr(partials.ptr).i32(rows.length).ptr(ptrOf(out, b)).i32(DTYPE_CODE[out.storage.dtype]).i32(1);
      mod.launch("sumsq_final", 1, 1024, 0, ctx.compute, a);
    });
  } finally {
    b.free(partials);
  }
}
