// Accumulating backwards (micro-batches) into leaves that already hold a gradient: float32 adds
// into leaves with no post-accumulate hook are gathered and made by one Backend.addMany at the end
// of the backward ([Note: accumulations gathered] in tensor.ts). The sums must be the ones of
// separate adds, to the bit, and whatever reads a gradient first must see its sum.
import { afterEach, describe, expect, it, vi } from "vitest";
import * as T from "../src";
import { cpuBackend } from "../src";

const gen = new T.Generator(11);
const r = (...shape: number[]): T.Tensor => T.randn(shape, { generator: gen });

/** Runs `fn` with the CPU backend's addMany hidden: every accumulation is then a separate add_. */
function separately<R>(fn: () => R): R {
  const backend = cpuBackend() as { addMany?: unknown };
  const own = Object.prototype.hasOwnProperty.call(backend, "addMany");
  const saved = backend.addMany;
  backend.addMany = undefined;
  try {
    return fn();
  } finally {
    if (own) backend.addMany = saved;
    else delete backend.addMany;
  }
}

/** One micro-batch: a linear layer with bias, then a scale and a shift (two more small leaves). */
function loss(x: T.Tensor, [w, b, gamma, beta]: readonly T.Tensor[]): T.Tensor {
  return T.sum(T.square(T.add(T.mul(T.linear(x, w, b), gamma), beta)));
}

/** Gradients of fresh leaves from `init` after the given backwards. */
function train(init: readonly T.Tensor[], steps: readonly ((leaves: T.Tensor[]) => void)[]): { leaves: T.Tensor[]; grads: number[][] } {
  const leaves = init.map((t) => t.detach().requiresGrad_());
  for (const step of steps) step(leaves);
  return { leaves, grads: leaves.map((l) => l.grad!.toArray() as number[]) };
}

describe("gradient accumulation gathered into one addMany per backward", () => {
  afterEach(() => vi.restoreAllMocks());

  it("three micro-batches: every gradient is the one separate adds make, to the bit, with one addMany per accumulating backward", () => {
    const xs = [r(5, 4), r(5, 4), r(5, 4)];
    const init = [r(3, 4), r(3), r(3), r(3)];
    const steps = xs.map((x) => (leaves: T.Tensor[]) => loss(x, leaves).backward());
    const expected = separately(() => train(init, steps).grads);
    const spy = vi.spyOn(cpuBackend(), "addMany");
    const { grads } = train(init, steps);
    // The first backward only sets gradients; w accumulates inside its product (beta = 1); b,
    // gamma and beta are added by one addMany in each of the two later backwards.
    expect(spy).toHaveBeenCalledTimes(2);
    for (const call of spy.mock.calls) expect(call[0]).toHaveLength(3);
    expect(grads).toEqual(expected);
  });

  it("a leaf with a post-accumulate hook is added at once: its hook sees the sum", () => {
    const [x1, x2] = [r(5, 4), r(5, 4)];
    const init = [r(3, 4), r(3), r(3), r(3)];
    const seen: number[][] = [];
    const steps = [
      (leaves: T.Tensor[]) => {
        loss(x1, leaves).backward();
        leaves[1].registerPostAccumulateGradHook((leaf) => seen.push(leaf.grad!.toArray() as number[]));
      },
      (leaves: T.Tensor[]) => loss(x2, leaves).backward(),
    ];
    const expected = separately(() => train(init, steps).grads);
    seen.length = 0;
    const spy = vi.spyOn(cpuBackend(), "addMany");
    const { grads } = train(init, steps);
    expect(grads).toEqual(expected);
    // The hook ran once, inside the second backward, and saw b's final gradient.
    expect(seen).toEqual([expected[1]]);
    // gamma and beta were gathered; b was not.
    expect(spy).toHaveBeenCalledTimes(1);
    expect(spy.mock.calls[0][0]).toHaveLength(2);
  });

  it("a leaf reached twice in one backward, and a gradient read inside a backward, see every add made before", () => {
    const x = r(6);
    // s reaches the loss three times: each accumulation after the first finds the one before gathered.
    const twice = (s: T.Tensor): T.Tensor => T.sum(T.add(T.mul(T.mul(x, s), x), T.mul(s, s)));
    const steps = [0, 1, 2].map(() => (leaves: T.Tensor[]) => twice(leaves[0]).backward());
    const init = [r(6)];
    const expected = separately(() => train(init, steps).grads);
    expect(train(init, steps).grads).toEqual(expected);

    // A hook on a gradient flowing towards t runs after t's first accumulation of this backward
    // was gathered (t reaches the loss directly too): reading t.grad there sees it added.
    const reads: number[][] = [];
    const withHook = (t: T.Tensor): T.Tensor => {
      const y = T.mul(t, x);
      y.registerHook((g) => {
        reads.push(t.grad!.toArray() as number[]);
        return g;
      });
      return T.sum(T.add(T.mul(y, x), T.mul(t, 3)));
    };
    const hookSteps = [0, 1].map(() => (leaves: T.Tensor[]) => withHook(leaves[0]).backward());
    const init2 = [r(6)];
    const expected2 = separately(() => train(init2, hookSteps).grads);
    const readsSeparately = reads.splice(0);
    expect(train(init2, hookSteps).grads).toEqual(expected2);
    expect(reads).toEqual(readsSeparately);
  });
});
