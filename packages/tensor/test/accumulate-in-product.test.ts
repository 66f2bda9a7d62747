// A weight that already holds a gradient gets the next micro-batch's added by the weight-gradient
// product itself (beta = 1; [Note: accumulating in the product] in autograd.ts) instead of a
// separate add_ over the gradient. The sum must be the plain sum's (float64 here: exact to
// rounding), written into the same memory, with the hooks a separate accumulation runs.
import { afterEach, describe, expect, it, vi } from "vitest";
import * as T from "../src";
import { cpuBackend } from "../src";

const gen = new T.Generator(5);
const r = (...shape: number[]): T.Tensor => T.randn(shape, { dtype: "float64", generator: gen });

function close(a: number[], b: number[]): void {
  expect(a.length).toBe(b.length);
  for (let i = 0; i < a.length; i++) expect(Math.abs(a[i] - b[i])).toBeLessThanOrEqual(1e-12 * (1 + Math.abs(b[i])));
}

/** Gradients of w and b after one backward of sum(linear(x, w, b) * probe), from fresh leaves. */
function single(x: T.Tensor, w: T.Tensor, b: T.Tensor, probe: T.Tensor): [number[], number[]] {
  const w1 = w.detach().requiresGrad_();
  const b1 = b.detach().requiresGrad_();
  T.sum(T.mul(T.linear(x, w1, b1), probe)).backward();
  return [w1.grad!.toArray(), b1.grad!.toArray()];
}

describe("gradient accumulation inside the weight-gradient product", () => {
  afterEach(() => vi.restoreAllMocks());

  it("linear: the second backward adds into the same .grad with beta = 1, equal to the sum of the two", () => {
    const [x1, x2, probe] = [r(6, 4), r(6, 4), r(6, 3)];
    const w = r(3, 4).requiresGrad_();
    const b = r(3).requiresGrad_();
    const spy = vi.spyOn(cpuBackend(), "matmul");
    T.sum(T.mul(T.linear(x1, w, b), probe)).backward();
    const storage = w.grad!.storageRef;
    const posted: string[] = [];
    w.registerPostAccumulateGradHook(() => posted.push("w"));
    expect(spy.mock.calls.some((c) => c[3]?.beta === 1)).toBe(false);
    T.sum(T.mul(T.linear(x2, w, b), probe)).backward();
    expect(spy.mock.calls.some((c) => c[3]?.beta === 1)).toBe(true);
    expect(w.grad!.storageRef).toBe(storage);
    expect(posted).toEqual(["w"]);
    const [gw1, gb1] = single(x1, w, b, probe);
    const [gw2, gb2] = single(x2, w, b, probe);
    close(w.grad!.toArray(), gw1.map((v, i) => v + gw2[i]));
    close(b.grad!.toArray(), gb1.map((v, i) => v + gb2[i]));
  });

  it("accumulates into a gradient that is a view of a larger buffer (a sharded unit's flat gradients)", () => {
    const [x, probe] = [r(5, 4), r(5, 3)];
    const w = r(3, 4).requiresGrad_();
    const flat = T.zeros([20], { dtype: "float64" });
    flat.narrow(0, 16, 4).fill_(7);
    w.grad = flat.narrow(0, 2, 12).reshape([3, 4]);
    T.sum(T.mul(T.linear(x, w), probe)).backward();
    const fresh = w.detach().requiresGrad_();
    T.sum(T.mul(T.linear(x, fresh), probe)).backward();
    const gw = fresh.grad!.toArray();
    const all = flat.toArray();
    close(all.slice(2, 14), gw);
    expect(all.slice(0, 2)).toEqual([0, 0]);
    expect(all.slice(14)).toEqual([0, 0, 7, 7, 7, 7]);
  });

  it("geluMlp: both weights accumulate in their products", () => {
    const [x1, x2, probe] = [r(6, 4), r(6, 4), r(6, 4)];
    const params = [r(8, 4), r(8), r(4, 8), r(4)].map((p) => p.requiresGrad_());
    const run = (x: T.Tensor, ps: T.Tensor[]) => T.sum(T.mul(T.geluMlp(x, ps[0], ps[1], ps[2], ps[3]), probe)).backward();
    run(x1, params);
    const spy = vi.spyOn(cpuBackend(), "matmul");
    run(x2, params);
    expect(spy.mock.calls.filter((c) => c[3]?.beta === 1)).toHaveLength(2);
    const fresh = (x: T.Tensor) => {
      const ps = params.map((p) => p.detach().requiresGrad_());
      run(x, ps);
      return ps.map((p) => p.grad!.toArray());
    };
    const [a, c] = [fresh(x1), fresh(x2)];
    params.forEach((p, k) => close(p.grad!.toArray(), a[k].map((v, i) => v + c[k][i])));
  });

  it("embedding: the second backward scatters into the same .grad, equal to the sum of the two", () => {
    const ids = [T.fromHost(Int32Array.from([0, 3, 3, 1]), [4], "int32"), T.fromHost(Int32Array.from([2, 3, 0, 0]), [4], "int32")];
    const probe = r(4, 5);
    const w = r(4, 5).requiresGrad_();
    T.sum(T.mul(T.embedding(ids[0], w), probe)).backward();
    const storage = w.grad!.storageRef;
    T.sum(T.mul(T.embedding(ids[1], w), probe)).backward();
    expect(w.grad!.storageRef).toBe(storage);
    const fresh = ids.map((i) => {
      const w1 = w.detach().requiresGrad_();
      T.sum(T.mul(T.embedding(i, w1), probe)).backward();
      return w1.grad!.toArray();
    });
    close(w.grad!.toArray(), fresh[0].map((v, i) => v + fresh[1][i]));
  });

  it("a weight with a gradient hook gets the new gradient alone, as the hook expects", () => {
    const [x, probe] = [r(6, 4), r(6, 3)];
    const w = r(3, 4).requiresGrad_();
    T.sum(T.mul(T.linear(x, w), probe)).backward();
    const first = w.grad!.toArray();
    const seen: number[][] = [];
    w.registerHook((g) => void seen.push(g.toArray()));
    const spy = vi.spyOn(cpuBackend(), "matmul");
    T.sum(T.mul(T.linear(x, w), probe)).backward();
    expect(spy.mock.calls.some((c) => c[3]?.beta === 1)).toBe(false);
    close(seen[0], first);
    close(w.grad!.toArray(), first.map((v) => 2 * v));
  });
});
