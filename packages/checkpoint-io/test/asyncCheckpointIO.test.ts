/** Background saves: snapshot at call time, one write at a time, failures rethrown later. */
import { isCheckpointIO, CONTRACT_VERSION, type Checkpoint, type CheckpointIO } from "@fulgur/core";
import { fromHost, memoryStats, noGrad, scope } from "@fulgur/tensor";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { AsyncCheckpointIO, FullCheckpointIO } from "../src/index";
import { makeTempDir, removeDir } from "./helpers";

let dir: string;
beforeEach(async () => {
  dir = await makeTempDir();
});
afterEach(async () => {
  await removeDir(dir);
});

interface Gate {
  promise: Promise<void>;
  open(): void;
}
function gate(): Gate {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

/** A CheckpointIO whose writes wait on gates the test opens, recording what it was given. */
class ControlledIO implements CheckpointIO {
  readonly name = "controlled";
  readonly contractVersion = CONTRACT_VERSION;
  readonly events: string[] = [];
  readonly gates: Gate[] = [];
  readonly saved: { path: string; values: Record<string, number[]>; meta: unknown }[] = [];
  failWith: Error | undefined;
  tornDown = false;

  async save(checkpoint: Checkpoint, path: string): Promise<void> {
    const g = gate();
    this.gates.push(g);
    this.events.push(`start ${path}`);
    await g.promise;
    if (this.failWith) {
      this.events.push(`fail ${path}`);
      throw this.failWith;
    }
    const values: Record<string, number[]> = {};
    for (const [k, t] of Object.entries(checkpoint.tensors)) values[k] = t.toArray();
    this.saved.push({ path, values, meta: checkpoint.meta });
    this.events.push(`end ${path}`);
  }
  async load(): Promise<Checkpoint> {
    this.events.push("load");
    return { tensors: {}, meta: {} };
  }
  async remove(path: string): Promise<void> {
    this.events.push(`remove ${path}`);
  }
  teardown(): void {
    this.tornDown = true;
  }
}

const tick = () => new Promise((r) => setTimeout(r, 5));

describe("AsyncCheckpointIO", () => {
  it("fulfils the CheckpointIO contract and names what it wraps", () => {
    const a = new AsyncCheckpointIO();
    expect(isCheckpointIO(a)).toBe(true);
    expect(a.name).toBe("async(full)");
  });

  it("returns before the write finishes, with the tensors as they were at the call", async () => {
    const inner = new ControlledIO();
    const io = new AsyncCheckpointIO(inner);
    const w = fromHost(new Float32Array([1, 2]), [2], "float32");
    const meta = { step: 1 };
    await io.save({ tensors: { w }, meta }, "a");
    expect(io.pending).toBe(1);
    // Training goes on: the live tensor and meta change while the write is still in flight.
    noGrad(() => w.fill_(5));
    meta.step = 2;
    inner.gates[0].open();
    await io.flush();
    expect(inner.saved).toEqual([{ path: "a", values: { w: [1, 2] }, meta: { step: 1 } }]);
    expect(io.pending).toBe(0);
  });

  it("writes one save at a time, in call order: a second save waits for the first", async () => {
    const inner = new ControlledIO();
    const io = new AsyncCheckpointIO(inner);
    const t = fromHost(new Int32Array([1]), [1], "int32");
    await io.save({ tensors: { t }, meta: {} }, "first");
    let secondReturned = false;
    const second = io.save({ tensors: { t }, meta: {} }, "second").then(() => (secondReturned = true));
    await tick();
    expect(inner.events).toEqual(["start first"]);
    expect(secondReturned).toBe(false);
    inner.gates[0].open();
    await second;
    await tick();
    expect(inner.events).toEqual(["start first", "end first", "start second"]);
    inner.gates[1].open();
    await io.flush();
    expect(inner.events.at(-1)).toBe("end second");
  });

  it("rethrows a background failure once, from the next call, and does not write the save it refuses", async () => {
    const inner = new ControlledIO();
    const io = new AsyncCheckpointIO(inner);
    const t = fromHost(new Float32Array([1]), [1], "float32");
    inner.failWith = new Error("disk full");
    await io.save({ tensors: { t }, meta: {} }, "a");
    inner.gates[0].open();
    await expect(io.save({ tensors: { t }, meta: {} }, "b")).rejects.toThrow("disk full");
    await io.flush(); // reported already: not thrown twice
    expect(inner.events).toEqual(["start a", "fail a"]);

    inner.failWith = new Error("disk full again");
    await io.save({ tensors: { t }, meta: {} }, "c");
    inner.gates[1].open();
    await expect(io.flush()).rejects.toThrow("disk full again");

    inner.failWith = new Error("at teardown");
    await io.save({ tensors: { t }, meta: {} }, "d");
    inner.gates[2].open();
    await expect(io.teardown()).rejects.toThrow("at teardown");
  });

  it("frees its host snapshots once written, and keeps them alive past an enclosing scope", async () => {
    const io = new AsyncCheckpointIO(new FullCheckpointIO());
    const w = fromHost(new Float32Array([3, 4]), [2], "float32");
    const path = join(dir, "scoped.safetensors");
    const live = memoryStats("cpu").liveTensors;
    let saving: Promise<void> | undefined;
    scope(() => {
      saving = io.save({ tensors: { w }, meta: { step: 9 } }, path);
    });
    await saving;
    await io.flush();
    expect(memoryStats("cpu").liveTensors).toBe(live);
    const back = await io.load(path);
    expect(back.tensors.w.toArray()).toEqual([3, 4]);
    expect(back.meta).toEqual({ step: 9 });
  });

  it("waits for pending writes before load and remove, and tears the wrapped IO down", async () => {
    const inner = new ControlledIO();
    const io = new AsyncCheckpointIO(inner);
    await io.save({ tensors: {}, meta: {} }, "p");
    const loading = io.load("p");
    const removing = io.remove("p");
    await tick();
    expect(inner.events).toEqual(["start p"]);
    inner.gates[0].open();
    await loading;
    await removing;
    expect(inner.events).toEqual(["start p", "end p", "load", "remove p"]);
    await io.teardown();
    expect(inner.tornDown).toBe(true);
  });

  it("refuses a bad checkpoint at the call, writing nothing", async () => {
    const io = new AsyncCheckpointIO(new FullCheckpointIO());
    const path = join(dir, "x.safetensors");
    await expect(io.save({ tensors: { w: 1 as never }, meta: {} }, path)).rejects.toThrow(/checkpoint\.tensors\["w"\] must be a Tensor/);
    await io.flush();
    expect(existsSync(path)).toBe(false);
  });
});
