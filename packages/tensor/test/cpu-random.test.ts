/** Philox4x32-10 known answers (Random123), the counter/key mapping of random(), and draw statistics. */
import { describe, expect, it } from "vitest";
import { philox4x32 } from "../src/cpu";
import { be, empty, values } from "./cpu-helpers";

describe("philox4x32", () => {
  it("matches the Random123 known-answer vectors", () => {
    expect(philox4x32(0, 0, 0, 0)).toEqual([0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
    const m = 0xffffffff;
    expect(philox4x32(m, m, m, m, m, m)).toEqual([0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]);
    expect(philox4x32(0x243f6a88, 0x85a308d3, 0xa4093822, 0x299f31d0, 0x13198a2e, 0x03707344)).toEqual([
      0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1,
    ]);
  });
});

describe("cpu random", () => {
  it("uses counter offset + i and the 64-bit seed as key", () => {
    const seed = 0x1234_5678_9abc_def0n;
    const offset = 2 ** 32 - 3; // crosses into the high counter word
    const out = empty([8], "float64");
    be.random("uniform", out, { seed, offset });
    const got = values(out);
    const normal = empty([8], "float64");
    be.random("normal", normal, { seed, offset });
    const gotN = values(normal);
    for (let i = 0; i < 8; i++) {
      const c = offset + i;
      const [x0, x1] = philox4x32(c % 2 ** 32, Math.floor(c / 2 ** 32), 0x9abcdef0, 0x12345678);
      expect(got[i]).toBe((x0 >>> 8) * 2 ** -24);
      const u1 = ((x0 >>> 8) + 1) * 2 ** -24;
      const u2 = (x1 >>> 8) * 2 ** -24;
      expect(gotN[i]).toBe(Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2));
    }
  });

  it("replays: a draw at offset + k equals the tail of a draw at offset", () => {
    const a = empty([100]);
    const b = empty([90]);
    be.random("normal", a, { seed: 7n, offset: 5 });
    be.random("normal", b, { seed: 7n, offset: 15 });
    expect(Array.from(values(b))).toEqual(Array.from(values(a)).slice(10));
    const c = empty([10]);
    be.random("normal", c, { seed: 8n, offset: 5 });
    expect(Array.from(values(c))).not.toEqual(Array.from(values(a)).slice(0, 10));
  });

  function stats(v: Float64Array): { mean: number; variance: number } {
    let s = 0;
    for (const x of v) s += x;
    const mean = s / v.length;
    let q = 0;
    for (const x of v) q += (x - mean) ** 2;
    return { mean, variance: q / v.length };
  }

  it("uniform draws lie in [0, 1) with mean 1/2 and variance 1/12", () => {
    const out = empty([100_000]);
    be.random("uniform", out, { seed: 42n, offset: 0 });
    const v = values(out);
    expect(v.every((x) => x >= 0 && x < 1)).toBe(true);
    const { mean, variance } = stats(v);
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.005);
    expect(Math.abs(variance - 1 / 12)).toBeLessThan(0.002);
  });

  it("normal draws have mean 0 and variance 1", () => {
    const out = empty([100_000]);
    be.random("normal", out, { seed: 1234567890123n, offset: 99 });
    const v = values(out);
    expect(v.every(Number.isFinite)).toBe(true);
    const { mean, variance } = stats(v);
    expect(Math.abs(mean)).toBeLessThan(0.015);
    expect(Math.abs(variance - 1)).toBeLessThan(0.025);
  });
});
