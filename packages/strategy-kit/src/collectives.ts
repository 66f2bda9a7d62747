/**
 * The collectives DDP makes besides gradient reduction: the start-of-training broadcast of
 * parameters and buffers from rank 0 (flattened per dtype into a few large buffers, never one
 * message per tensor), a scalar reduce for logged metrics, and a broadcast of JSON values.
 * Each takes a `race` that makes the wait fail at once when another rank has failed.
 */
import type { ProcessGroup, ReduceOp } from "@fulgur/core";
import { type Tensor, cat, fromHost, itemsize, noGrad, scope, zeros } from "@fulgur/tensor";

export type Race = <T>(p: Promise<T>) => Promise<T>;

export const identityRace: Race = (p) => p;

/** Largest flat buffer one broadcast of module state sends (PyTorch uses 250 MB). */
export const STATE_BROADCAST_BYTES = 256 * 2 ** 20;

/** Groups tensors of one dtype and device into chunks of at most `capBytes` (a bigger tensor alone). */
function chunks(tensors: readonly Tensor[], capBytes: number): Tensor[][] {
  const byKind = new Map<string, Tensor[][]>();
  for (const t of tensors) {
    const key = `${t.device}|${t.dtype}`;
    const list = byKind.get(key) ?? [[]];
    byKind.set(key, list);
    let last = list[list.length - 1];
    const bytes = (xs: Tensor[]) => xs.reduce((s, x) => s + x.numel * itemsize(x.dtype), 0);
    if (last.length > 0 && bytes(last) + t.numel * itemsize(t.dtype) > capBytes) {
      last = [];
      list.push(last);
    }
    last.push(t);
  }
  return [...byKind.values()].flat().filter((c) => c.length > 0);
}

/**
 * Overwrites `tensors` on every rank with their values on `src`, in place (parameters keep their
 * identity, so optimizers and views built on them stay valid).
 */
export async function broadcastTensors(
  group: ProcessGroup,
  tensors: readonly Tensor[],
  src: number,
  race: Race = identityRace,
  capBytes = STATE_BROADCAST_BYTES,
): Promise<void> {
  for (const chunk of chunks(tensors.filter((t) => t.numel > 0), capBytes)) {
    const total = chunk.reduce((s, t) => s + t.numel, 0);
    const { dtype, device } = chunk[0];
    const flat = noGrad(() =>
      scope(() =>
        group.rank === src ? cat(chunk.map((t) => t.reshape([t.numel])), 0) : zeros([total], { dtype, device }),
      ),
    ).untrack();
    try {
      await race(group.broadcast(flat, src).wait());
      if (group.rank === src) continue;
      noGrad(() =>
        scope(() => {
          let offset = 0;
          for (const t of chunk) {
            t.copy_(flat.narrow(0, offset, t.numel).reshape(t.shape));
            offset += t.numel;
          }
        }),
      );
    } finally {
      flat.dispose();
    }
  }
}

/**
 * Reduces `tensors` across the group in place, flattened per dtype and device into a few large
 * buffers (one message per chunk, never one per tensor; DESIGN.md decision 5).
 */
export async function allReduceTensors(
  group: ProcessGroup,
  tensors: readonly Tensor[],
  op: ReduceOp = "sum",
  race: Race = identityRace,
  capBytes = STATE_BROADCAST_BYTES,
): Promise<void> {
  for (const chunk of chunks(tensors.filter((t) => t.numel > 0), capBytes)) {
    const flat = noGrad(() => scope(() => cat(chunk.map((t) => t.reshape([t.numel])), 0))).untrack();
    try {
      await race(group.allReduce(flat, op).wait());
      noGrad(() =>
        scope(() => {
          let offset = 0;
          for (const t of chunk) {
            t.copy_(flat.narrow(0, offset, t.numel).reshape(t.shape));
            offset += t.numel;
          }
        }),
      );
    } finally {
      flat.dispose();
    }
  }
}

/** All-reduces one number across the group (in float64, so sums of counts stay exact). */
export async function reduceScalar(group: ProcessGroup, value: number, op: ReduceOp, race: Race = identityRace): Promise<number> {
  if (typeof value !== "number") throw new TypeError(`reduce: value must be a number, got ${typeof value}`);
  const t = fromHost(Float64Array.of(value), [1], "float64").untrack();
  try {
    await race(group.allReduce(t, op).wait());
    return t.item();
  } finally {
    t.dispose();
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * Sends a JSON-serialisable value from `src` to every rank: its byte length first, then the bytes
 * packed into int32 words. Every rank returns the decoded copy, so all ranks hold equal values.
 */
export async function broadcastJson<T>(group: ProcessGroup, value: T, src: number, race: Race = identityRace): Promise<T> {
  if (!Number.isInteger(src) || src < 0 || src >= group.size) {
    throw new RangeError(`broadcast src: got ${JSON.stringify(src)}; expected a rank from 0 to ${group.size - 1}`);
  }
  const mine = group.rank === src;
  let bytes: Uint8Array | undefined;
  if (mine) {
    const text = JSON.stringify(value);
    bytes = encoder.encode(text === undefined ? "null" : text);
  }
  const length = fromHost(Int32Array.of(bytes?.length ?? 0), [1], "int32").untrack();
  let n: number;
  try {
    await race(group.broadcast(length, src).wait());
    n = length.item();
  } finally {
    length.dispose();
  }
  const words = new Int32Array(Math.max(1, Math.ceil(n / 4)));
  if (bytes) new Uint8Array(words.buffer).set(bytes);
  const payload = fromHost(words, [words.length], "int32").untrack();
  try {
    await race(group.broadcast(payload, src).wait());
    const host = payload.toHost() as Int32Array;
    const received = new Uint8Array(host.buffer, host.byteOffset, n);
    return JSON.parse(decoder.decode(received)) as T;
  } finally {
    payload.dispose();
  }
}
