/**
 * Collective communication between ranks (DESIGN.md, decision 7). Every call returns at once with
 * a `Work` handle; the tensor arguments are read and written in place when the work completes.
 * The CPU group (TCP, @fulgur/distributed) and the NCCL group (@fulgur/accelerator-cuda) implement it.
 *
 * Two ways to wait (decision 14): `wait()` is a promise, for code that can await; `synchronize()`
 * orders instead, for code that cannot (forward and backward hooks are synchronous). After
 * `synchronize()` returns, work issued by this process sees the collective's result: on CUDA the
 * compute stream waits on the collective's event and the host goes on at once; on CPU the host
 * blocks until the result is in the caller's tensors.
 */
import type { Tensor } from "@fulgur/tensor";

export type ReduceOp = "sum" | "avg" | "max" | "min";

export interface Work {
  /** Resolves when the collective has finished and its outputs may be read; rejects on failure or timeout. */
  wait(): Promise<void>;
  /**
   * Work issued after this call sees the collective's result; never awaits. On failure (or when
   * the failure is already known, for a device that reports it later) it throws the collective's
   * error, the same one `wait()` rejects with. Calling it again, or mixing it with `wait()`, is
   * allowed: the result is written to the tensors once.
   */
  synchronize(): void;
  /** True once the collective has finished, successfully or not. */
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
