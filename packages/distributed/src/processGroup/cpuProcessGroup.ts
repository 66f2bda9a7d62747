/**
 * The CPU process group: the ProcessGroup contract of @fulgur/core over TCP, for tensors. It is a
 * thin adapter: inputs are copied to the host when the call is made (so the caller may go on
 * computing, as with a GPU stream), the HostProcessGroup does the work, and results are written
 * back into the caller's tensors in place when it completes.
 */
import type { ProcessGroup, ReduceOp, Work } from "@fulgur/core";
import { fromHost, noGrad } from "@fulgur/tensor";
import type { HostArray, Tensor } from "@fulgur/tensor";
import { DistributedArgumentError } from "../errors";
import type { CollectiveRecord } from "./collectiveLog";
import { createHostProcessGroup, type CreateHostGroupOptions, type HostProcessGroup } from "./hostGroup";
import { allocStorage } from "./reduce";
import { PromiseWork } from "./work";

/** Creates the world CPU process group of this rank; see CreateHostGroupOptions. */
export async function createCpuProcessGroup(options: CreateHostGroupOptions): Promise<CpuProcessGroup> {
  return new CpuProcessGroup(await createHostProcessGroup(options));
}

export class CpuProcessGroup implements ProcessGroup {
  readonly backend = "tcp";

  constructor(
    /** The array-level group, for callers that hold host arrays rather than tensors. */
    readonly host: HostProcessGroup,
  ) {}

  get rank(): number {
    return this.host.rank;
  }
  get size(): number {
    return this.host.size;
  }
  get ranks(): readonly number[] {
    return this.host.ranks;
  }
  get name(): string {
    return this.host.name;
  }

  allReduce(tensor: Tensor, op: ReduceOp = "sum"): Work {
    const done = this.host.allReduce(tensor.toHost(), tensor.dtype, op, tensor.shape);
    return new PromiseWork(done.then((r) => writeBack(tensor, r)));
  }

  broadcast(tensor: Tensor, src: number): Work {
    // Receivers only need the size; reading their tensor would cost a device sync for nothing.
    const data = src === this.rank ? tensor.toHost() : allocStorage(tensor.dtype, tensor.numel);
    const done = this.host.broadcast(data, tensor.dtype, src, tensor.shape);
    return new PromiseWork(done.then((r) => (src === this.rank ? undefined : writeBack(tensor, r))));
  }

  allGather(output: Tensor, input: Tensor): Work {
    sameDtype("allGather", output, input);
    if (output.numel !== input.numel * this.size) {
      throw new DistributedArgumentError(
        `allGather output: shape [${output.shape}] has ${output.numel} elements; expected ${this.size} × ${input.numel} ` +
          `(group size × input [${input.shape}])`,
      );
    }
    const done = this.host.allGather(input.toHost(), input.dtype, input.shape);
    return new PromiseWork(done.then((r) => writeBack(output, r)));
  }

  reduceScatter(output: Tensor, input: Tensor, op: ReduceOp = "sum"): Work {
    sameDtype("reduceScatter", output, input);
    if (input.numel !== output.numel * this.size) {
      throw new DistributedArgumentError(
        `reduceScatter input: shape [${input.shape}] has ${input.numel} elements; expected ${this.size} × ${output.numel} ` +
          `(group size × output [${output.shape}])`,
      );
    }
    const done = this.host.reduceScatter(input.toHost(), input.dtype, op, input.shape);
    return new PromiseWork(done.then((r) => writeBack(output, r)));
  }

  send(tensor: Tensor, dst: number, tag = 0): Work {
    return new PromiseWork(this.host.send(tensor.toHost(), tensor.dtype, dst, tag, tensor.shape));
  }

  recv(tensor: Tensor, src: number, tag = 0): Work {
    const done = this.host.recv(tensor.dtype, tensor.numel, src, tag, tensor.shape);
    return new PromiseWork(done.then((r) => writeBack(tensor, r)));
  }

  barrier(): Work {
    return new PromiseWork(this.host.barrier());
  }

  async newGroup(ranks: readonly number[]): Promise<CpuProcessGroup> {
    return new CpuProcessGroup(await this.host.newGroup(ranks));
  }

  /** The last ~64 collectives this rank issued (op, shape, dtype, seq, call site, state), oldest first. */
  recentCollectives(): CollectiveRecord[] {
    return this.host.recentCollectives();
  }

  destroy(): Promise<void> {
    return this.host.destroy();
  }
}

/** Copies a result into `tensor` in place; the temporary host-backed tensor is freed at once. */
function writeBack(tensor: Tensor, result: HostArray): void {
  noGrad(() => {
    const src = fromHost(result, tensor.shape, tensor.dtype);
    try {
      tensor.copy_(src);
    } finally {
      src.dispose();
    }
  });
}

function sameDtype(op: string, output: Tensor, input: Tensor): void {
  if (output.dtype !== input.dtype) {
    throw new DistributedArgumentError(`${op}: output dtype ${output.dtype} differs from input dtype ${input.dtype}`);
  }
}
