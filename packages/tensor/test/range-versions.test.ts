// Storage versions per element range: a write changes the version of exactly the ranges it
// overlaps, so autocast's kept copies of parameters that are views of one flat buffer stay current
// while other parameters of the buffer are written.
import { describe, expect, it } from "vitest";
import * as T from "../src";
import { RangeVersions } from "../src/versions";

describe("RangeVersions", () => {
  it("agrees with a per-element model over random writes and reads", () => {
    const n = 97;
    const v = new RangeVersions(n);
    const stamps = new Array<number>(n).fill(0);
    let clock = 0;
    let seed = 12345;
    const rnd = (k: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % k;
    };
    // Ranges aligned to a few "parameters" (the common case) mixed with arbitrary ones and whole writes.
    const bounds = [0, 10, 30, 31, 60, 97];
    const range = (): [number, number] => {
      const r = rnd(10);
      if (r === 0) return [0, n - 1];
      if (r < 6) {
        const i = rnd(bounds.length - 1);
        return [bounds[i], bounds[i + 1] - 1];
      }
      const a = rnd(n);
      return [a, a + rnd(n - a)];
    };
    for (let step = 0; step < 3000; step++) {
      const [lo, hi] = range();
      if (rnd(2) === 0) {
        v.write(lo, hi);
        clock++;
        for (let i = lo; i <= hi; i++) stamps[i] = clock;
      } else {
        expect(v.read(lo, hi)).toBe(Math.max(...stamps.slice(lo, hi + 1)));
      }
    }
    expect(v.latest).toBe(clock);
  });
});

describe("tensor versions", () => {
  it("an in-place write through a view changes the versions of the views it overlaps, only", () => {
    const flat = T.zeros([20]);
    const a = flat.narrow(0, 0, 8).view([2, 4]);
    const b = flat.narrow(0, 8, 12);
    const bT = b.view([3, 4]).t(); // strided: covers b's whole extent
    const [va, vb, vbt] = [a.version, b.version, bT.version];
    T.noGrad(() => a.fill_(1));
    expect(a.version).not.toBe(va);
    expect([b.version, bT.version]).toEqual([vb, vbt]);
    b.narrow(0, 11, 1).markModified();
    expect(bT.version).not.toBe(vbt);
    const [va2, vb2] = [a.version, b.version];
    flat.markModified(); // the whole buffer: every range
    expect(a.version).not.toBe(va2);
    expect(b.version).not.toBe(vb2);
    for (const t of [flat, a, b, bT]) t.dispose();
  });
});

describe("autocast copies of views of one flat buffer", () => {
  const gen = new T.Generator(9);

  /** Two weights and two biases as views into one flat buffer, as a sharded unit's parameters are. */
  function flatParams(): { flat: T.Tensor; params: T.Tensor[] } {
    const shapes = [[6, 4], [6], [3, 6], [3]];
    const total = shapes.reduce((s, sh) => s + T.numel(sh), 0);
    const flat = T.randn([total], { generator: gen }).untrack();
    let at = 0;
    const params = T.noGrad(() =>
      shapes.map((sh) => {
        const n = T.numel(sh);
        const p = flat.narrow(0, at, n).view(sh).requiresGrad_().untrack();
        at += n;
        return p;
      }),
    );
    return { flat, params };
  }

  const forward = (x: T.Tensor, [w1, b1, w2, b2]: T.Tensor[]): T.Tensor =>
    T.autocast("bfloat16", () => T.linear(T.linear(x, w1, b1).relu(), w2, b2));

  it("a write to one parameter re-casts it alone; the others stay hits", () => {
    const { params } = flatParams();
    const x = T.randn([2, 4], { generator: gen });
    T.resetAutocastCopyStats();
    forward(x, params);
    expect(T.autocastCopyStats()).toEqual({ hits: 0, casts: 4 });
    forward(x, params);
    expect(T.autocastCopyStats()).toEqual({ hits: 4, casts: 4 });
    T.noGrad(() => params[2].mul_(2));
    forward(x, params);
    expect(T.autocastCopyStats()).toEqual({ hits: 7, casts: 5 });
    expect(bits(T.lowPrecisionCopyOf(params[2])!)).toEqual(bits(T.cast(params[2].detach(), "bfloat16")));
  });

  it("the optimizer marking each parameter written in turn leaves every copy current", () => {
    const { params } = flatParams();
    const x = T.randn([2, 4], { generator: gen });
    forward(x, params);
    for (const p of params) T.markCopyWritten(p);
    T.resetAutocastCopyStats();
    forward(x, params);
    expect(T.autocastCopyStats()).toEqual({ hits: 4, casts: 0 });
  });

  it("a write to the whole flat buffer makes every copy stale", () => {
    const { flat, params } = flatParams();
    const x = T.randn([2, 4], { generator: gen });
    forward(x, params);
    T.noGrad(() => flat.mul_(0.5));
    T.resetAutocastCopyStats();
    const y = forward(x, params);
    expect(T.autocastCopyStats()).toEqual({ hits: 0, casts: 4 });
    const fresh = T.autocast("bfloat16", () =>
      T.linear(T.linear(x, params[0].detach(), params[1].detach()).relu(), params[2].detach(), params[3].detach()),
    );
    expect(bits(y)).toEqual(bits(fresh));
  });
});

function bits(t: T.Tensor): number[] {
  return Array.from(T.cast(t, "float64").toArray());
}
