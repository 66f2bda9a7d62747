/**
 * Collective communication between ranks (DESIGN.md, decision 7). Every call returns at once with
 * a `Work` handle; the tensor arguments are read and written in place when the work completes.
 * The CPU group (TCP, @fulgur/distributed) and the NCCL group (@fulgur/accelerator-cuda) implement it.
 */
import type { Tensor } from "@fulgur/tensor";

export type ReduceOp = "sum" | "avg" | "max" | "min";

export interface Work {
  /** Resolves when the collective has finished and its outputs may be read; rejects on failure or timeout. */
  wait(): Promise<void>;
  isCompleted(): boolean;
}

export interface ProcessGroup {
  readonly backend: string;
  readonly rank: number;
  readonly size: number;
  /** Global ranks of the members, in group-rank order. */
  readonly ranks: readonly number[];

  allReduce(tensor: Tensor, op?: ReduceOp): Work;
  broadcast(tensor: Tensor, src: number): Work;
  /** output holds `size` chunks of input's size, concatenated along dim 0, in group-rank order. */
  allGather(output: Tensor, input: Tensor): Work;
  /** input holds `size` chunks along dim 0; output receives the reduction of chunk `rank`. */
  reduceScatter(output: Tensor, input: Tensor, op?: ReduceOp): Work;
  send(tensor: Tensor, dst: number, tag?: number): Work;
  recv(tensor: Tensor, src: number, tag?: number): Work;
  barrier(): Work;
  /** A sub-group of these group ranks; every member of this group must call it with the same list. */
  newGroup(ranks: readonly number[]): Promise<ProcessGroup>;
  destroy(): Promise<void>;
}
