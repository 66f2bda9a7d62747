/**
 * Argument checks of the process-group calls, shared by the array-level HostProcessGroup (in the
 * transport's worker thread) and the tensor-level CpuProcessGroup (on the caller's thread). The
 * caller's thread checks before anything is sent to the worker, so a bad argument throws where the
 * call was made, synchronously, and never costs a sequence number (see [Note: matching collectives]
 * in hostGroup.ts); the worker checks again for callers of the array-level API.
 */
import type { ReduceOp } from "@fulgur/core";
import { DTYPES, type DType, itemsize } from "@fulgur/tensor";
import { DistributedArgumentError } from "../errors";
import { REDUCE_OPS } from "./reduce";

/** What a group is, as far as argument checks and error messages need it. */
export interface GroupIdentity {
  readonly name: string;
  /** This process's place in the group, or -1 when it is not a member. */
  readonly rank: number;
  readonly size: number;
  /** Global ranks of the members, in group-rank order. */
  readonly ranks: readonly number[];
  readonly globalRank: number;
}

/** Bytes of an element of each dtype: tensor's own table (itemsize), keyed for lookups by dtype name. */
export const DTYPE_BYTES: Readonly<Record<DType, number>> = Object.freeze(Object.fromEntries(DTYPES.map((d) => [d, itemsize(d)])) as Record<DType, number>);

const ARRAY_TYPES: Record<DType, string> = {
  float32: "Float32Array",
  float64: "Float64Array",
  bfloat16: "Uint16Array",
  float16: "Uint16Array",
  int32: "Int32Array",
};

export function checkGroupRank(g: GroupIdentity, field: string, r: number): void {
  if (!Number.isInteger(r) || r < 0 || r >= g.size) {
    throw new DistributedArgumentError(
      `${field}: got ${JSON.stringify(r)}; expected a group rank from 0 to ${g.size - 1} (group "${g.name}" has ${g.size} members)`,
    );
  }
}

/** The peer of a send or recv: a member, and not this rank. */
export function checkPeer(g: GroupIdentity, field: string, r: number): void {
  if (g.rank < 0) throw notMember(g, field.split(" ")[0]);
  checkGroupRank(g, field, r);
  if (r === g.rank) throw new DistributedArgumentError(`${field}: got ${r}, this rank itself; send and recv need another rank`);
}

export function checkMember(g: GroupIdentity, op: string): void {
  if (g.rank < 0) throw notMember(g, op);
}

export function notMember(g: GroupIdentity, op: string): DistributedArgumentError {
  return new DistributedArgumentError(
    `${op}: global rank ${g.globalRank} is not a member of group "${g.name}" (global ranks ${JSON.stringify(g.ranks)})`,
  );
}

export function checkDType(op: string, dtype: unknown): void {
  if (typeof dtype !== "string" || !(dtype in DTYPE_BYTES)) {
    throw new DistributedArgumentError(`${op} dtype: got ${JSON.stringify(dtype)}; expected one of ${Object.keys(DTYPE_BYTES).join(", ")}`);
  }
}

/** The host array must be the storage format of its dtype (16-bit floats as raw Uint16Array bits). */
export function checkArray(op: string, data: unknown, dtype: unknown): void {
  checkDType(op, dtype);
  const expected = ARRAY_TYPES[dtype as DType];
  // The tag names the built-in type even for subclasses and arrays from another realm.
  const got = ArrayBuffer.isView(data) ? (data as Float32Array)[Symbol.toStringTag] : undefined;
  if (got !== expected) {
    throw new DistributedArgumentError(`${op}: a ${dtype} host array must be a ${expected}; got ${got ?? typeof data}`);
  }
}

export function checkReduceOp(op: string, value: unknown): void {
  if (!REDUCE_OPS.includes(value as ReduceOp)) {
    throw new DistributedArgumentError(`${op} op: got ${JSON.stringify(value)}; expected one of ${REDUCE_OPS.join(", ")}`);
  }
}

export function checkTag(tag: unknown): void {
  if (!Number.isInteger(tag) || (tag as number) < 0) {
    throw new DistributedArgumentError(`tag: got ${JSON.stringify(tag)}; expected a non-negative integer`);
  }
}

export function checkNumel(numel: unknown): void {
  if (!Number.isInteger(numel) || (numel as number) < 0) {
    throw new DistributedArgumentError(`recv numel: got ${JSON.stringify(numel)}; expected a non-negative integer`);
  }
}
