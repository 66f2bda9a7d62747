/** Attention forward vs naive float64 softmax(QK^T)V (causal and not), backward vs finite differences. */
import { describe, it } from "vitest";
import type { View } from "../src/backend";
import { be, dot, empty, expectClose, makeView, numericGrad, randArray, rng, values } from "./cpu-helpers";

function refAttention(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  [B, H, Tq, Tk, D, Dv]: number[],
  causal: boolean,
  scale: number,
) {
  const out = new Float64Array(B * H * Tq * Dv);
  const lse = new Float64Array(B * H * Tq);
  for (let bh = 0; bh < B * H; bh++) {
    for (let i = 0; i < Tq; i++) {
      const s = new Float64Array(Tk).fill(-Infinity);
      for (let j = 0; j < Tk; j++) {
        if (causal && j > i) continue;
        let d = 0;
        for (let c = 0; c < D; c++) d += q[(bh * Tq + i) * D + c] * k[(bh * Tk + j) * D + c];
        s[j] = scale * d;
      }
      const m = Math.max(...s);
      let z = 0;
      for (let j = 0; j < Tk; j++) z += Math.exp(s[j] - m);
      lse[bh * Tq + i] = m + Math.log(z);
      for (let j = 0; j < Tk; j++) {
        const p = Math.exp(s[j] - m) / z;
        for (let c = 0; c < Dv; c++) out[(bh * Tq + i) * Dv + c] += p * v[(bh * Tk + j) * Dv + c];
      }
    }
  }
  return { out, lse };
}

/** q, k, v as slices of one packed [B, T, 3, H, D] buffer, as a fused QKV projection produces. */
function packedQkv(qv: Float64Array, kv: Float64Array, vv: Float64Array, [B, H, T, D]: number[]): View[] {
  const all = new Float64Array(B * T * 3 * H * D);
  const strides = [T * 3 * H * D, D, 3 * H * D, 1];
  [qv, kv, vv].forEach((src, w) => {
    for (let b = 0; b < B; b++)
      for (let h = 0; h < H; h++)
        for (let t = 0; t < T; t++)
          for (let d = 0; d < D; d++)
            all[b * strides[0] + h * strides[1] + t * strides[2] + w * H * D + d] = src[((b * H + h) * T + t) * D + d];
  });
  const base = makeView(all, [all.length], "float32");
  return [0, 1, 2].map((w) => ({ storage: base.storage, shape: [B, H, T, D], strides, offset: w * H * D }));
}

describe("cpu attention", () => {
  for (const causal of [false, true]) {
    it(`forward ${causal ? "causal" : "non-causal"} on packed strided q/k/v across query blocks`, () => {
      const r = rng(causal ? 40 : 41);
      const [B, H, T, D] = [2, 2, 37, 5];
      const n = B * H * T * D;
      const [qv, kv, vv] = [randArray(r, n), randArray(r, n), randArray(r, n)];
      const [q, k, v] = packedQkv(qv, kv, vv, [B, H, T, D]);
      const out = empty([B, H, T, D]);
      const lse = empty([B, H, T]);
      const scale = 1 / Math.sqrt(D);
      be.attention(q, k, v, out, lse, causal, scale);
      const ref = refAttention(values(q), values(k), values(v), [B, H, T, T, D, D], causal, scale);
      expectClose(values(out), ref.out, 1e-5, 1e-6);
      expectClose(values(lse), ref.lse, 1e-6, 1e-6);
    });
  }

  it("supports different key length and value width (non-causal)", () => {
    const r = rng(42);
    const [B, H, Tq, Tk, D, Dv] = [1, 3, 5, 9, 4, 3];
    const qv = randArray(r, B * H * Tq * D);
    const kv = randArray(r, B * H * Tk * D);
    const vv = randArray(r, B * H * Tk * Dv);
    const out = empty([B, H, Tq, Dv], "float64");
    const lse = empty([B, H, Tq], "float64");
    be.attention(
      makeView(qv, [B, H, Tq, D], "float64"),
      makeView(kv, [B, H, Tk, D], "float64"),
      makeView(vv, [B, H, Tk, Dv], "float64"),
      out,
      lse,
      false,
      0.7,
    );
    const ref = refAttention(qv, kv, vv, [B, H, Tq, Tk, D, Dv], false, 0.7);
    expectClose(values(out), ref.out, 1e-12, 1e-12);
    expectClose(values(lse), ref.lse, 1e-12, 1e-12);
  });

  for (const causal of [false, true]) {
    it(`backward ${causal ? "causal" : "non-causal"} matches finite differences (float64)`, () => {
      const r = rng(causal ? 43 : 44);
      const shape = [1, 2, 35, 3];
      const n = 210;
      const [qv, kv, vv, R] = [randArray(r, n), randArray(r, n), randArray(r, n), randArray(r, n)];
      const scale = 0.6;
      const lse = empty([1, 2, 35], "float64");
      const forward = (): Float64Array => {
        const out = empty(shape, "float64");
        be.attention(
          makeView(qv, shape, "float64"),
          makeView(kv, shape, "float64"),
          makeView(vv, shape, "float64"),
          out,
          lse,
          causal,
          scale,
        );
        return values(out);
      };
      const outv = forward();
      const [gq, gk, gv] = [empty(shape, "float64"), empty(shape, "float64"), empty(shape, "float64")];
      be.attentionBackward(
        makeView(qv, shape, "float64"),
        makeView(kv, shape, "float64"),
        makeView(vv, shape, "float64"),
        makeView(outv, shape, "float64"),
        lse,
        makeView(R, shape, "float64"),
        gq,
        gk,
        gv,
        causal,
        scale,
      );
      const loss = () => dot(forward(), R);
      expectClose(values(gq), numericGrad(qv, loss), 1e-6, 1e-8);
      expectClose(values(gk), numericGrad(kv, loss), 1e-6, 1e-8);
      expectClose(values(gv), numericGrad(vv, loss), 1e-6, 1e-8);
    });
  }
});
