/**
 * The collective algorithms, on host arrays, over a `Link` that sends numbered steps to group
 * ranks. Nothing here knows about sockets or tensors, so every algorithm can be tested with ranks
 * as async tasks in one process.
 *
 * Large tensors use the bandwidth-optimal ring (Patarasuk & Yuan): all-reduce is a ring
 * reduce-scatter followed by a ring all-gather, so each rank sends and receives 2·(N-1)/N of the
 * data whatever N is. Small tensors use direct exchanges, whose single round beats the ring's
 * 2·(N-1) latency-bound steps. Either way every rank ends with bitwise the same result: the ring
 * reduces each chunk once, at its owner, and the direct path reduces in group-rank order everywhere.
 *
 * [Note: buffers in flight] `Link.send` writes without copying, so an algorithm never modifies an
 * array between sending it and its send resolving. Every step awaits its sends before the next.
 */
import type { ReduceOp } from "@fulgur/core";
import type { DType, HostArray } from "@fulgur/tensor";
import {
  accumulate,
  accumulatorKind,
  allocStorage,
  asBytes,
  chunkBounds,
  finish,
  fromBytes,
  reduceInOrder,
  storageKind,
  toAccumulator,
  type Accumulator,
} from "./reduce";

/** What an algorithm may do: talk to other members of its group by group rank, step by step. */
export interface Link {
  readonly rank: number;
  readonly size: number;
  /** Sends `payload` as step `step` of this collective; see [Note: buffers in flight]. */
  send(to: number, step: number, payload: Uint8Array): Promise<void>;
  /** The payload `from` sent as `step`; rejects if `from` sent a different step or collective. */
  recv(from: number, step: number): Promise<Uint8Array>;
}

/** Broadcast pipelines segments of this many bytes down the chain so every hop works at once. */
export const BROADCAST_SEGMENT_BYTES = 1 << 20;

const mod = (a: number, n: number) => ((a % n) + n) % n;

/**
 * Ring reduce-scatter over `bounds` (size+1 element offsets): afterwards chunk `rank` of the returned
 * accumulator holds the reduction of every rank's chunk `rank`; other chunks hold partial garbage.
 * Steps used: stepBase .. stepBase+size-2.
 */
export async function ringReduceScatter(
  link: Link,
  dtype: DType,
  op: ReduceOp,
  input: HostArray,
  bounds: readonly number[],
  stepBase = 0,
): Promise<Accumulator> {
  const { rank, size } = link;
  const acc = toAccumulator(dtype, input);
  const next = mod(rank + 1, size);
  const prev = mod(rank - 1, size);
  const kind = accumulatorKind(dtype);
  // At step s, rank r passes on chunk r-s-1 (its partial sum so far) and folds its own values
  // into chunk r-s-2 arriving from r-1; after size-1 steps chunk r has visited every rank.
  for (let s = 0; s < size - 1; s++) {
    const out = mod(rank - s - 1, size);
    const into = mod(rank - s - 2, size);
    const [, bytes] = await Promise.all([
      link.send(next, stepBase + s, asBytes(acc.subarray(bounds[out], bounds[out + 1]))),
      link.recv(prev, stepBase + s),
    ]);
    const incoming = fromBytes(kind, bytes) as Accumulator;
    checkLength(incoming.length, bounds[into + 1] - bounds[into], prev, stepBase + s);
    accumulate(op, acc.subarray(bounds[into], bounds[into + 1]), incoming);
  }
  return acc;
}

/**
 * Ring all-gather in storage format: `out` holds this rank's chunk `rank` on entry and every
 * chunk on exit. Steps used: stepBase .. stepBase+size-2.
 */
export async function ringAllGather(
  link: Link,
  dtype: DType,
  out: HostArray,
  bounds: readonly number[],
  stepBase = 0,
): Promise<void> {
  const { rank, size } = link;
  const next = mod(rank + 1, size);
  const prev = mod(rank - 1, size);
  const kind = storageKind(dtype);
  for (let s = 0; s < size - 1; s++) {
    const send = mod(rank - s, size);
    const recv = mod(rank - s - 1, size);
    const [, bytes] = await Promise.all([
      link.send(next, stepBase + s, asBytes(out.subarray(bounds[send], bounds[send + 1]))),
      link.recv(prev, stepBase + s),
    ]);
    const chunk = fromBytes(kind, bytes);
    checkLength(chunk.length, bounds[recv + 1] - bounds[recv], prev, stepBase + s);
    out.set(chunk as ArrayLike<number>, bounds[recv]);
  }
}

/** All-reduce by ring reduce-scatter then ring all-gather; returns a new array. */
export async function ringAllReduce(link: Link, dtype: DType, op: ReduceOp, input: HostArray): Promise<HostArray> {
  const { rank, size } = link;
  const bounds = chunkBounds(input.length, size);
  const acc = await ringReduceScatter(link, dtype, op, input, bounds, 0);
  const out = allocStorage(dtype, input.length);
  const mine = finish(dtype, op, acc.subarray(bounds[rank], bounds[rank + 1]), size);
  out.set(mine as ArrayLike<number>, bounds[rank]);
  await ringAllGather(link, dtype, out, bounds, size - 1);
  return out;
}

/** All-reduce by sending the whole input to every rank and reducing in group-rank order. */
export async function directAllReduce(link: Link, dtype: DType, op: ReduceOp, input: HostArray): Promise<HostArray> {
  const contributions = await exchangeAll(link, dtype, input, input.length);
  return reduceInOrder(dtype, op, contributions);
}

/** All-gather of equal-size inputs: output is `size` inputs concatenated in group-rank order. */
export async function allGather(link: Link, dtype: DType, input: HostArray, useRing: boolean): Promise<HostArray> {
  const { rank, size } = link;
  const m = input.length;
  const out = allocStorage(dtype, m * size);
  if (useRing) {
    out.set(input as ArrayLike<number>, rank * m);
    await ringAllGather(link, dtype, out, equalBounds(m, size), 0);
    return out;
  }
  const parts = await exchangeAll(link, dtype, input, m);
  parts.forEach((p, r) => out.set(p as ArrayLike<number>, r * m));
  return out;
}

/** Reduce-scatter of `size` equal chunks: returns the reduction of every rank's chunk `rank`. */
export async function reduceScatter(
  link: Link,
  dtype: DType,
  op: ReduceOp,
  input: HostArray,
  useRing: boolean,
): Promise<HostArray> {
  const { rank, size } = link;
  const m = input.length / size;
  if (useRing) {
    const bounds = equalBounds(m, size);
    const acc = await ringReduceScatter(link, dtype, op, input, bounds, 0);
    // Copy out of the big accumulator so the result does not pin it.
    return finish(dtype, op, acc.slice(bounds[rank], bounds[rank + 1]), size);
  }
  const kind = storageKind(dtype);
  const sends: Promise<void>[] = [];
  for (let r = 0; r < size; r++) {
    if (r !== rank) sends.push(link.send(r, 0, asBytes(input.subarray(r * m, (r + 1) * m))));
  }
  const parts: HostArray[] = [];
  for (let r = 0; r < size; r++) {
    if (r === rank) {
      parts.push(input.subarray(r * m, (r + 1) * m));
      continue;
    }
    const part = fromBytes(kind, await link.recv(r, 0));
    checkLength(part.length, m, r, 0);
    parts.push(part);
  }
  await Promise.all(sends);
  return reduceInOrder(dtype, op, parts);
}

/**
 * Broadcast from group rank `src`. Large arrays flow down the ring src → src+1 → … in segments,
 * each rank forwarding a segment while the next arrives; small ones go straight from src to all.
 */
export async function broadcast(link: Link, dtype: DType, data: HostArray, src: number, useChain: boolean): Promise<HostArray> {
  const { rank, size } = link;
  const kind = storageKind(dtype);
  if (size === 1) return data;
  if (!useChain) {
    if (rank === src) {
      await Promise.all(range(size).filter((r) => r !== src).map((r) => link.send(r, 0, asBytes(data))));
      return data;
    }
    const out = fromBytes(kind, await link.recv(src, 0));
    checkLength(out.length, data.length, src, 0);
    return out;
  }
  const bytes = asBytes(data);
  const total = bytes.byteLength;
  const segments = Math.max(1, Math.ceil(total / BROADCAST_SEGMENT_BYTES));
  const position = mod(rank - src, size);
  const next = mod(rank + 1, size);
  const prev = mod(rank - 1, size);
  const forwards: Promise<void>[] = [];
  if (position === 0) {
    for (let i = 0; i < segments; i++) {
      forwards.push(link.send(next, i, bytes.subarray(i * BROADCAST_SEGMENT_BYTES, Math.min(total, (i + 1) * BROADCAST_SEGMENT_BYTES))));
    }
    await Promise.all(forwards);
    return data;
  }
  const received = new Uint8Array(total);
  for (let i = 0; i < segments; i++) {
    const start = i * BROADCAST_SEGMENT_BYTES;
    const expected = Math.min(total, start + BROADCAST_SEGMENT_BYTES) - start;
    const seg = await link.recv(prev, i);
    checkLength(seg.byteLength, expected, prev, i, "bytes");
    received.set(seg, start);
    // Forward the received buffer itself: nothing writes to it afterwards.
    if (position < size - 1) forwards.push(link.send(next, i, seg));
  }
  await Promise.all(forwards);
  return fromBytes(kind, received);
}

/** Dissemination barrier: ⌈log2 N⌉ rounds, in round k rank r signals r+2^k and hears from r-2^k. */
export async function barrier(link: Link): Promise<void> {
  const { rank, size } = link;
  for (let k = 1, step = 0; k < size; k *= 2, step++) {
    await Promise.all([link.send(mod(rank + k, size), step, new Uint8Array(0)), link.recv(mod(rank - k, size), step)]);
  }
}

/** Sends `input` to every other rank and returns everyone's input in group-rank order. */
async function exchangeAll(link: Link, dtype: DType, input: HostArray, expected: number): Promise<HostArray[]> {
  const { rank, size } = link;
  const kind = storageKind(dtype);
  const bytes = asBytes(input);
  const sends = range(size)
    .filter((r) => r !== rank)
    .map((r) => link.send(r, 0, bytes));
  const parts: HostArray[] = [];
  for (let r = 0; r < size; r++) {
    if (r === rank) {
      parts.push(input);
      continue;
    }
    const part = fromBytes(kind, await link.recv(r, 0));
    checkLength(part.length, expected, r, 0);
    parts.push(part);
  }
  await Promise.all(sends);
  return parts;
}

function equalBounds(m: number, size: number): number[] {
  return Array.from({ length: size + 1 }, (_, i) => i * m);
}

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

/** Sizes are checked in every message's metadata; this guards against a peer sending a wrong payload anyway. */
function checkLength(got: number, expected: number, from: number, step: number, unit = "elements"): void {
  if (got !== expected) {
    throw new RangeError(`group rank ${from} sent ${got} ${unit} at step ${step}; expected ${expected}`);
  }
}
