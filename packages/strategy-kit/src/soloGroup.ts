/**
 * A process group of one rank: every collective is a local copy. Strategies use it where a
 * dimension of their layout has size one (NO_SHARD's shard group), so the same code runs with no
 * communicator to create.
 */
import type { ProcessGroup, ReduceOp, Work } from "@fulgur/core";
import { type Tensor, noGrad } from "@fulgur/tensor";

/** A collective with nothing to do (one rank): complete from the start. */
export const COMPLETED_WORK: Work = Object.freeze({
  wait: () => Promise.resolve(),
  synchronize: () => undefined,
  isCompleted: () => true,
});

export class SoloGroup implements ProcessGroup {
  readonly backend = "solo";
  readonly rank = 0;
  readonly size = 1;
  readonly ranks: readonly number[];

  constructor(globalRank: number) {
    this.ranks = Object.freeze([globalRank]);
  }

  private copy(output: Tensor, input: Tensor): Work {
    if (output !== input) noGrad(() => output.copy_(input.reshape(output.shape)));
    return COMPLETED_WORK;
  }

  allReduce(_tensor: Tensor, _op?: ReduceOp): Work {
    return COMPLETED_WORK;
  }
  broadcast(_tensor: Tensor, _src: number): Work {
    return COMPLETED_WORK;
  }
  allGather(output: Tensor, input: Tensor): Work {
    return this.copy(output, input);
  }
  reduceScatter(output: Tensor, input: Tensor, _op?: ReduceOp): Work {
    return this.copy(output, input);
  }
  send(): Work {
    throw new Error("a group of one rank has nobody to send to");
  }
  recv(): Work {
    throw new Error("a group of one rank has nobody to receive from");
  }
  barrier(): Work {
    return COMPLETED_WORK;
  }
  async newGroup(ranks: readonly number[]): Promise<ProcessGroup> {
    if (ranks.length !== 1 || ranks[0] !== 0) throw new RangeError(`newGroup of a group of one rank: got ${JSON.stringify(ranks)}; expected [0]`);
    return this;
  }
  async destroy(): Promise<void> {}
}
