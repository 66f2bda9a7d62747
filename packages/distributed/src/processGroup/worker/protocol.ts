/**
 * What the caller's thread and the transport's worker thread say to each other (see
 * [Note: the transport thread] in cpuProcessGroup.ts), and the shared memory they meet in.
 *
 * Requests go over one MessagePort, in order, so the worker issues collectives in the order the
 * caller made them. Every request gets one reply. An operation's data and its status word live in
 * one SharedArrayBuffer (a "slot"): the caller copies its input there and the worker writes the
 * result there, so payloads are never serialised, and the status word is what `synchronize()`
 * blocks on.
 *
 * [Note: reply before status] The worker posts an operation's reply before it sets the status
 * word. A caller that wakes on the status word therefore finds the reply (the error's details, on
 * failure) already queued on its port and reads it with receiveMessageOnPort, without an event loop.
 */
import type { MessagePort } from "node:worker_threads";
import type { DType, HostArray } from "@fulgur/tensor";
import type { CollectiveRecord } from "../collectiveLog";
import { storageKind } from "../reduce";
import type { ErrorRecord } from "./errorCodec";

/** Bytes before a slot's data: the status word, padded so float64 data is aligned. */
export const SLOT_HEADER_BYTES = 8;

/** Values of a slot's status word. */
export const SlotStatus = { Pending: 0, Done: 1, Failed: 2 } as const;

/** Words of the worker's control block, shared once at start. */
export const Control = {
  /** Incremented every HEARTBEAT_MS while the worker's event loop runs. */
  Heartbeat: 0,
  /** Set to 1 when the worker hit an error it cannot survive. */
  Dead: 1,
} as const;
export const CONTROL_WORDS = 2;
export const HEARTBEAT_MS = 250;

export interface WorkerData {
  /** The worker's end of the request channel. */
  readonly port: MessagePort;
  /** CONTROL_WORDS Int32 words, see Control. */
  readonly control: SharedArrayBuffer;
  /** Set when running from TypeScript sources: the module the bootstrap imports once tsx is registered. */
  readonly entry?: string;
}

export type OpName = "allReduce" | "broadcast" | "allGather" | "reduceScatter" | "send" | "recv" | "barrier";

/**
 * One operation. Data layout in the slot (elements of `dtype` after the header):
 * allReduce, broadcast, recv, send: [0, numel); allGather: input at [rank·numel, (rank+1)·numel),
 * output [0, size·numel); reduceScatter: input [0, numel), output [0, numel/size).
 */
export interface OpRequest {
  readonly t: "op";
  readonly id: number;
  readonly group: number;
  readonly op: OpName;
  readonly dtype: DType;
  readonly numel: number;
  /** The reduce op, the broadcast source, or the send/recv peer. */
  readonly arg: string | number;
  readonly tag: number;
  readonly shape: readonly number[];
  /** Where the caller made the call (taken on its thread, for the collective log). */
  readonly callSite: string;
  readonly slot: SharedArrayBuffer;
}

export interface JoinOptions {
  /** The store the worker connects its own client to. */
  readonly store: { readonly host: string; readonly port: number };
  readonly token: string;
  readonly rank: number;
  readonly size: number;
  readonly name: string;
  readonly host?: string;
  readonly timeoutMs: number;
  readonly smallTensorBytes?: number;
  /** Store key of the job's failure record to watch, or null not to watch. */
  readonly failureKey: string | null;
}

export type Request =
  | OpRequest
  | { readonly t: "serve"; readonly id: number; readonly host: string; readonly port: number; readonly token: string }
  | { readonly t: "closeServer"; readonly id: number }
  | { readonly t: "join"; readonly id: number; readonly options: JoinOptions }
  | { readonly t: "newGroup"; readonly id: number; readonly group: number; readonly ranks: readonly number[] }
  | { readonly t: "destroy"; readonly id: number; readonly group: number }
  /** Answered like an operation (a status word in `slot`), so the caller can wait without an event loop. */
  | { readonly t: "log"; readonly id: number; readonly slot: SharedArrayBuffer }
  /** Answered once the worker has finished what it was doing; see [Note: exit while serving] in thread.ts. */
  | { readonly t: "ping"; readonly id: number; readonly slot: SharedArrayBuffer };

/** A group as the caller's thread sees it: the worker's handle and what argument checks need. */
export interface GroupInfo {
  readonly group: number;
  readonly name: string;
  readonly rank: number;
  readonly size: number;
  readonly ranks: readonly number[];
  readonly globalRank: number;
}

export type ReplyValue = GroupInfo | { readonly port: number } | CollectiveRecord[] | undefined;

export interface Reply {
  readonly t: "reply";
  readonly id: number;
  readonly value?: ReplyValue;
  readonly error?: ErrorRecord;
}

/** A new slot for `dataBytes` bytes of data, its status Pending. */
export function allocSlot(dataBytes: number): SharedArrayBuffer {
  return new SharedArrayBuffer(SLOT_HEADER_BYTES + dataBytes);
}

export function statusWord(slot: SharedArrayBuffer): Int32Array {
  return new Int32Array(slot, 0, 1);
}

/** Sets a slot's status and wakes whoever blocks on it; see [Note: reply before status]. */
export function settleSlot(slot: SharedArrayBuffer, status: (typeof SlotStatus)["Done" | "Failed"]): void {
  const word = statusWord(slot);
  Atomics.store(word, 0, status);
  Atomics.notify(word, 0);
}

/** Elements [start, start+n) of a slot's data, in `dtype`'s storage format, without a copy. */
export function slotData(slot: SharedArrayBuffer, dtype: DType, start: number, n: number): HostArray {
  switch (storageKind(dtype)) {
    case "float32":
      return new Float32Array(slot, SLOT_HEADER_BYTES + start * 4, n);
    case "float64":
      return new Float64Array(slot, SLOT_HEADER_BYTES + start * 8, n);
    case "int32":
      return new Int32Array(slot, SLOT_HEADER_BYTES + start * 4, n);
    case "uint16":
      return new Uint16Array(slot, SLOT_HEADER_BYTES + start * 2, n);
  }
}
