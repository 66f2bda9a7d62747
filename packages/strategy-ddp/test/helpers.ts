/**
 * Test helpers: a fake ProcessGroup that records every collective and simulates the other ranks,
 * and a small model whose parameters fall into predictable buckets.
 */
import type { ProcessGroup, ReduceOp, Work } from "@fulgur/core";
import { Linear, Module } from "@fulgur/nn";
import { Generator, type Tensor, fromHost, noGrad } from "@fulgur/tensor";

export interface RecordedCall {
  readonly op: string;
  readonly tensor: Tensor;
  /** The tensor's values when the collective was called (what a real group sends). */
  readonly sent: number[];
  readonly reduceOp?: ReduceOp;
}

/**
 * Records calls; `allReduce` completes on `wait()` by writing `transform(sent)` into the tensor, the
 * way a real group writes the result back when the work completes. `events` interleaves the calls
 * with whatever the test pushes (hook firings), to check ordering.
 */
export class RecordingGroup implements ProcessGroup {
  readonly backend = "recording";
  readonly ranks: readonly number[];
  readonly calls: RecordedCall[] = [];
  readonly events: string[] = [];

  constructor(
    readonly rank = 0,
    readonly size = 2,
    private readonly transform: (sent: number[]) => number[] = (x) => x,
  ) {
    this.ranks = Array.from({ length: size }, (_, i) => i);
  }

  private work(done: () => void): Work {
    let completed = false;
    const complete = (): void => {
      if (!completed) done();
      completed = true;
    };
    return {
      wait: async () => complete(),
      synchronize: complete,
      isCompleted: () => completed,
    };
  }

  allReduce(tensor: Tensor, op: ReduceOp = "sum"): Work {
    const sent = tensor.toArray();
    this.calls.push({ op: "allReduce", tensor, sent, reduceOp: op });
    this.events.push(`allReduce#${this.calls.length - 1}`);
    return this.work(() => {
      const out = this.transform(sent);
      noGrad(() => {
        const src = fromHost(Float32Array.from(out), tensor.shape, "float32");
        tensor.copy_(src);
        src.dispose();
      });
    });
  }
  broadcast(tensor: Tensor, src: number): Work {
    this.calls.push({ op: `broadcast(${src})`, tensor, sent: tensor.toArray() });
    return this.work(() => {});
  }
  allGather(output: Tensor, input: Tensor): Work {
    this.calls.push({ op: "allGather", tensor: input, sent: input.toArray() });
    return this.work(() => void output);
  }
  reduceScatter(output: Tensor, input: Tensor): Work {
    this.calls.push({ op: "reduceScatter", tensor: input, sent: input.toArray() });
    return this.work(() => void output);
  }
  send(tensor: Tensor): Work {
    this.calls.push({ op: "send", tensor, sent: [] });
    return this.work(() => {});
  }
  recv(tensor: Tensor): Work {
    this.calls.push({ op: "recv", tensor, sent: [] });
    return this.work(() => {});
  }
  barrier(): Work {
    this.events.push("barrier");
    return this.work(() => {});
  }
  async newGroup(): Promise<ProcessGroup> {
    throw new Error("RecordingGroup.newGroup is not used by DDP");
  }
  async destroy(): Promise<void> {}
}

/** Three Linear(8, 8) layers: per layer a 256-byte weight and a 32-byte bias (float32). */
export class ThreeLayers extends Module {
  constructor(seed = 0) {
    super();
    for (let i = 0; i < 3; i++) this.registerModule(`l${i}`, new Linear(8, 8, { generator: new Generator(seed * 10 + i + 1) }));
  }
  layer(i: number): Linear {
    return this.getSubmodule(`l${i}`) as Linear;
  }
  forward(x: Tensor, use: readonly number[] = [0, 1, 2]): Tensor {
    let h = x;
    for (const i of use) h = this.layer(i).call(h).tanh();
    return h;
  }
}

export function grads(ps: readonly Tensor[]): number[][] {
  return ps.map((p) => (p.grad ? p.grad.toArray() : []));
}
