/**
 * Where a fused AdamW update runs (adamwRoute.ts): on the parameters' backend unless a route is
 * installed; a route may take the call or leave it; routes nest, and each is gone once its function
 * returns, throws or its promise settles.
 */
import { describe, expect, it } from "vitest";
import { type AdamWRoute, type FusedAdamWCall, fromHost, fusedAdamW, routeAdamW } from "../src/index";

const HYPER = { lr: 0.1, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay: 0, step: 1 };

function call(): FusedAdamWCall {
  const t = (v: number) => fromHost(new Float32Array([v, v]), [2], "float32");
  return { params: [t(1)], grads: [t(0.5)], expAvg: [t(0)], expAvgSq: [t(0)], hyper: HYPER };
}
const param = (c: FusedAdamWCall) => Array.from(c.params[0].toHost());

describe("fusedAdamW and routeAdamW", () => {
  it("without a route, and where the route leaves the call, the backend updates it", () => {
    const plain = call();
    fusedAdamW(plain);
    // Adam's first step moves each element by lr against the gradient's sign.
    expect(param(plain)[0]).toBeCloseTo(0.9, 6);
    const left = call();
    const seen: FusedAdamWCall[] = [];
    routeAdamW((c) => (seen.push(c), false), () => fusedAdamW(left));
    expect(seen).toHaveLength(1);
    expect(param(left)).toEqual(param(plain));
  });

  it("a route that takes the call decides what runs on the backend; the innermost route is asked", () => {
    const outer: AdamWRoute = () => {
      throw new Error("the outer route is not asked while an inner one is installed");
    };
    const taken = call();
    routeAdamW(outer, () =>
      routeAdamW((_c, onBackend) => {
        onBackend({ ...taken, hyper: { ...HYPER, lr: 0.2 } });
        return true;
      }, () => fusedAdamW(taken)),
    );
    expect(param(taken)[0]).toBeCloseTo(0.8, 6);
  });

  it("a route is gone after its function throws, and only once its promise settles", async () => {
    const refuse: AdamWRoute = () => {
      throw new Error("routed");
    };
    expect(() => routeAdamW(refuse, () => {
      throw new Error("inside");
    })).toThrow("inside");
    expect(() => fusedAdamW(call())).not.toThrow();
    let release!: () => void;
    const pending = routeAdamW(refuse, () => new Promise<void>((r) => (release = r)));
    expect(() => fusedAdamW(call())).toThrow("routed");
    release();
    await pending;
    expect(() => fusedAdamW(call())).not.toThrow();
  });
});
