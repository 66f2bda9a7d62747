/**
 * Saving in the background, after Lightning's AsyncCheckpointIO: `save` copies the tensors to
 * host memory before it returns control (so training may go on mutating its weights at once) and
 * the wrapped CheckpointIO writes the copy while training continues. Writes run one at a time in
 * call order. A background failure is not lost: the next `save`, `flush`, `load`, `remove` or
 * `teardown` rethrows it.
 */
import { CONTRACT_VERSION, type Checkpoint, type CheckpointIO } from "@fulgur/core";
import { fromHost, type Tensor } from "@fulgur/tensor";
import { assertCheckpoint, FullCheckpointIO } from "./fullCheckpointIO";
import { setOwn } from "./safetensors/format";

/** Host copies of every tensor and a deep copy of meta, taken synchronously. */
function snapshot(checkpoint: Checkpoint): Checkpoint {
  assertCheckpoint(checkpoint);
  const tensors: Record<string, Tensor> = {};
  try {
    for (const [name, t] of Object.entries(checkpoint.tensors)) {
      // toHost() is a copy already; fromHost copies it into a CPU storage the caller cannot reach.
      // keep(): a save called inside scope() must not have its snapshot freed when the scope ends.
      setOwn(tensors, name, fromHost(t.toHost(), [...t.shape], t.dtype).keep());
    }
  } catch (e) {
    for (const t of Object.values(tensors)) t.dispose();
    throw e;
  }
  return { tensors, meta: structuredClone(checkpoint.meta) };
}

export class AsyncCheckpointIO implements CheckpointIO {
  readonly contractVersion = CONTRACT_VERSION;
  readonly name: string;
  // The last queued write; it never rejects (failures go to `failure`), so it can always be chained on.
  private tail: Promise<void> = Promise.resolve();
  // The first background failure not yet rethrown to the caller.
  private failure: { error: unknown } | undefined;
  private pendingCount = 0;

  constructor(readonly inner: CheckpointIO = new FullCheckpointIO()) {
    this.name = `async(${inner.name})`;
  }

  /** Number of saves queued or being written. */
  get pending(): number {
    return this.pendingCount;
  }

  /**
   * Snapshots `checkpoint` now, queues its write, and resolves once the previous save's write has
   * finished (rejecting with that write's error, in which case this save is not written).
   */
  save(checkpoint: Checkpoint, path: string): Promise<void> {
    let copy: Checkpoint;
    try {
      copy = snapshot(checkpoint);
    } catch (e) {
      return Promise.reject(e);
    }
    const previous = this.tail;
    this.pendingCount++;
    // Registered on `previous` before the caller's continuation below, so it sees an earlier
    // failure before that continuation reports (and clears) it.
    this.tail = previous
      .then(async () => {
        if (this.failure) return;
        try {
          await this.inner.save(copy, path);
        } catch (e) {
          this.failure ??= { error: e };
        }
      })
      .finally(() => {
        for (const t of Object.values(copy.tensors)) t.dispose();
        this.pendingCount--;
      });
    return previous.then(() => this.rethrow());
  }

  /** Waits for every queued write; rethrows the first background failure not yet reported. */
  async flush(): Promise<void> {
    await this.tail;
    this.rethrow();
  }

  async load(path: string, options?: { device?: string }): Promise<Checkpoint> {
    // A load of a path still being written would read the old file (or none).
    await this.flush();
    return this.inner.load(path, options);
  }

  async remove(path: string): Promise<void> {
    await this.flush();
    await this.inner.remove(path);
  }

  /** Waits for pending writes (rethrowing a failure), then tears the wrapped IO down if it can be. */
  async teardown(): Promise<void> {
    await this.flush();
    const inner = this.inner as CheckpointIO & { teardown?: () => unknown };
    if (typeof inner.teardown === "function") await inner.teardown();
  }

  private rethrow(): void {
    const f = this.failure;
    if (f) {
      this.failure = undefined;
      throw f.error;
    }
  }
}
