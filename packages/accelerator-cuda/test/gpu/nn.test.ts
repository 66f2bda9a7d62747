/**
 * GPU vs CPU for the row-wise neural-network ops (softmax, layer norm, embedding, cross entropy),
 * random draws (the same Philox stream bit for bit), fused AdamW and the global norm, plus the
 * errors a kernel reports through the device flag. float32 within 1e-5, bfloat16 within 1e-2.
 */
import type { DType, View } from "@fulgur/tensor";
import { describe, expect, it, vi } from "vitest";
import { KernelModule } from "../../src/launch";
import type { Pair } from "./harness";
import { NO_GPU, TOLERANCE, cpu, expectClose, gpu, hasGpu, mapPair, outPair, pair, randPair, randomData, values } from "./harness";

const DTYPES: DType[] = ["float32", "bfloat16"];
const f32Pair = (shape: number[], seed: number) => randPair(shape, "float32", seed);

/**
 * Layer norm forward and backward (gw / gb accumulated, from the same random start) on both
 * backends. Statistics are float32 on the fast kernels, float64 on the CPU: mean, rstd, gw and gb
 * within 1e-5 (1e-12 for float64 rows), out and gx within the row dtype's tolerance.
 */
function checkLayerNorm(label: string, x: Pair, w: Pair | null, b: Pair | null, seed: number): void {
  const dt = x.c.storage.dtype;
  const [R, C] = x.c.shape;
  const stats = dt === "float64" ? "float64" : "float32";
  const statTol = dt === "float64" ? 1e-12 : 1e-5;
  const out = outPair([R, C], dt);
  const mean = outPair([R], stats);
  const rstd = outPair([R], stats);
  cpu().layerNorm(x.c, w?.c ?? null, b?.c ?? null, 1e-5, out.c, mean.c, rstd.c);
  gpu().layerNorm(x.g, w?.g ?? null, b?.g ?? null, 1e-5, out.g, mean.g, rstd.g);
  expectClose(out, `${label}: out`);
  expectClose(mean, `${label}: mean`, statTol);
  expectClose(rstd, `${label}: rstd`, statTol);
  const gy = randPair([R, C], dt, seed);
  const gx = outPair([R, C], dt);
  const gw = w ? outPair([C], stats, seed + 1) : null;
  const gb = b ? outPair([C], stats, seed + 2) : null;
  cpu().layerNormBackward(gy.c, x.c, w?.c ?? null, mean.c, rstd.c, gx.c, gw?.c ?? null, gb?.c ?? null);
  gpu().layerNormBackward(gy.g, x.g, w?.g ?? null, mean.g, rstd.g, gx.g, gw?.g ?? null, gb?.g ?? null);
  expectClose(gx, `${label}: gx`, TOLERANCE[dt]);
  if (gw) expectClose(gw, `${label}: gw (accumulated)`, statTol);
  if (gb) expectClose(gb, `${label}: gb (accumulated)`, statTol);
}

const LN_SUFFIX: Partial<Record<DType, string>> = { float32: "f32", bfloat16: "bf16", float16: "f16" };

/** The kernels launched while `f` runs, by name. */
function kernelsLaunchedBy(f: () => void): string[] {
  const spy = vi.spyOn(KernelModule.prototype, "launch");
  try {
    f();
    return spy.mock.calls.map((c) => c[0]);
  } finally {
    spy.mockRestore();
  }
}

/**
 * Mixed-precision layer norm, called on the CUDA backend directly: forward x (xdt) -> out (odt), then
 * the backward that follows it in training, gy in odt and gx in x's dtype, weight and bias in pdt.
 * Compared with the CPU backend (float64) on the same inputs: 16-bit outputs within 1e-2, float32
 * ones within 1e-4, the float32 statistics and gw / gb within 1e-5 as for one dtype. Fresh rows are
 * aligned, so the 8-element kernels must run when 8 | cols, the scalar ones otherwise; a fall back to
 * the generic kernels would still match the CPU, hence the check on the kernel names.
 */
function checkMixedLayerNorm(xdt: DType, odt: DType, pdt: DType, R: number, C: number, seed: number): void {
  const label = `${xdt} -> ${odt}, ${R}x${C}`;
  const tol = (dt: DType) => (dt === "float32" ? 1e-4 : 1e-2);
  const variant = C % 8 === 0 ? "vec" : "scalar";
  const x = randPair([R, C], xdt, seed);
  const w = randPair([C], pdt, seed + 1);
  const b = randPair([C], pdt, seed + 2);
  const out = outPair([R, C], odt);
  const mean = outPair([R], "float32");
  const rstd = outPair([R], "float32");
  cpu().layerNorm(x.c, w.c, b.c, 1e-5, out.c, mean.c, rstd.c);
  const fwd = kernelsLaunchedBy(() => gpu().layerNorm(x.g, w.g, b.g, 1e-5, out.g, mean.g, rstd.g));
  expect(fwd, label).toEqual([`layernorm_fwd_${LN_SUFFIX[xdt]}_${LN_SUFFIX[odt]}_${variant}`]);
  expectClose(out, `${label}: out`, tol(odt));
  expectClose(mean, `${label}: mean`, 1e-5);
  expectClose(rstd, `${label}: rstd`, 1e-5);
  const gy = randPair([R, C], odt, seed + 3);
  const gx = outPair([R, C], xdt);
  const gw = outPair([C], "float32", seed + 4);
  const gb = outPair([C], "float32", seed + 5);
  cpu().layerNormBackward(gy.c, x.c, w.c, mean.c, rstd.c, gx.c, gw.c, gb.c);
  const bwd = kernelsLaunchedBy(() => gpu().layerNormBackward(gy.g, x.g, w.g, mean.g, rstd.g, gx.g, gw.g, gb.g));
  expect(bwd, label).toEqual([`layernorm_bwd_${LN_SUFFIX[odt]}_${LN_SUFFIX[xdt]}_${variant}`, "layernorm_bwd_dwdb_reduce"]);
  expectClose(gx, `${label}: gx`, tol(xdt));
  expectClose(gw, `${label}: gw (accumulated)`, 1e-5);
  expectClose(gb, `${label}: gb (accumulated)`, 1e-5);
}

describe.skipIf(!hasGpu)("neural-network ops on CUDA", () => {
  for (const dt of DTYPES) {
    for (const log of [false, true]) {
      it(`${log ? "log-" : ""}softmax forward and backward, wide rows and a sliced input (${dt})`, () => {
        for (const [rows, cols] of [[7, 9], [4, 5000]]) {
          const x = randPair([rows, cols], dt, 11);
          const y = outPair([rows, cols], dt);
          cpu().softmax(x.c, y.c, log);
          gpu().softmax(x.g, y.g, log);
          expectClose(y, `softmax ${rows}x${cols}`);
          const gy = randPair([rows, cols], dt, 12);
          const gx = outPair([rows, cols], dt);
          cpu().softmaxBackward(y.c, gy.c, gx.c, log);
          gpu().softmaxBackward(y.g, gy.g, gx.g, log);
          expectClose(gx, `softmax backward ${rows}x${cols}`, dt === "float32" ? 1e-5 : 1e-2);
        }
        const wide = randPair([6, 10], dt, 13);
        const sliced = mapPair(wide, (v) => ({ ...v, shape: [6, 7], offset: 2 }));
        const y2 = outPair([6, 7], dt);
        cpu().softmax(sliced.c, y2.c, log);
        gpu().softmax(sliced.g, y2.g, log);
        expectClose(y2, "softmax of a column slice");
      });
    }

    for (const affine of [true, false]) {
      it(`layer norm forward and backward ${affine ? "with" : "without"} weight and bias (${dt})`, () => {
        const [R, C] = [64, 96];
        const x = randPair([R, C], dt, 14);
        const w = affine ? randPair([C], dt, 15) : null;
        const b = affine ? randPair([C], dt, 16) : null;
        const out = outPair([R, C], dt);
        const mean = outPair([R], "float32");
        const rstd = outPair([R], "float32");
        cpu().layerNorm(x.c, w?.c ?? null, b?.c ?? null, 1e-5, out.c, mean.c, rstd.c);
        gpu().layerNorm(x.g, w?.g ?? null, b?.g ?? null, 1e-5, out.g, mean.g, rstd.g);
        expectClose(out, "layer norm out");
        expectClose(mean, "mean", 1e-5);
        expectClose(rstd, "rstd", 1e-5);
        const gy = randPair([R, C], dt, 17);
        const gx = outPair([R, C], dt);
        // gw / gb are accumulated into: both start from the same random values.
        const gw = affine ? outPair([C], "float32", 18) : null;
        const gb = affine ? outPair([C], "float32", 19) : null;
        cpu().layerNormBackward(gy.c, x.c, w?.c ?? null, mean.c, rstd.c, gx.c, gw?.c ?? null, gb?.c ?? null);
        gpu().layerNormBackward(gy.g, x.g, w?.g ?? null, mean.g, rstd.g, gx.g, gw?.g ?? null, gb?.g ?? null);
        expectClose(gx, "layer norm gx", dt === "float32" ? 1e-5 : 1e-2);
        if (gw && gb) {
          expectClose(gw, "layer norm gw (accumulated)", 1e-5);
          expectClose(gb, "layer norm gb (accumulated)", 1e-5);
        }
      });
    }

    it(`layer norm on the 16-byte, scalar and generic kernels: odd, 2048 and 8192 wide rows (${dt})`, () => {
      // 100 (bf16) / 2050 (f32): widths the 16-byte kernels cannot take; 2048 and 8192: the GPT's
      // widths on them, with more rows than backward blocks; 9000: forward vectorised, backward too
      // wide for a block (generic kernels).
      const widths = dt === "float32" ? [[300, 100], [64, 2050], [1200, 2048], [200, 8192], [3, 9000]] : [[300, 100], [1200, 2048], [200, 8192], [3, 9000]];
      for (const [R, C] of widths) {
        const x = randPair([R, C], dt, 100 + C);
        checkLayerNorm(`${R}x${C}`, x, randPair([C], dt, 101), randPair([C], dt, 102), 103);
      }
    });

    it(`layer norm of misaligned and strided views, mixed-dtype and strided weights, bias only (${dt})`, () => {
      const [R, C] = [40, 256];
      // One element into a flat buffer: every row 2 or 4 bytes past a 16-byte boundary.
      const flat = randPair([R * C + 1], dt, 110);
      const shifted = mapPair(flat, (v) => ({ ...v, shape: [R, C], strides: [C, 1], offset: 1 }));
      checkLayerNorm("offset view", shifted, randPair([C], dt, 111), randPair([C], dt, 112), 113);
      // A column slice: rows 264 elements apart (aligned for neither dtype's 16-byte words at offset 3).
      const wide = randPair([R, C + 8], dt, 114);
      const sliced = mapPair(wide, (v) => ({ ...v, shape: [R, C], offset: 3 }));
      checkLayerNorm("column slice", sliced, randPair([C], dt, 115), null, 116);
      // float32 weight and bias beside 16-bit rows, and a weight read with stride 2.
      const x = randPair([R, C], dt, 117);
      checkLayerNorm("float32 weight and bias", x, randPair([C], "float32", 118), randPair([C], "float32", 119), 120);
      const w2 = mapPair(randPair([2 * C], dt, 121), (v) => ({ ...v, shape: [C], strides: [2] }));
      checkLayerNorm("strided weight", x, w2, randPair([C], dt, 122), 123);
      checkLayerNorm("bias only", x, null, randPair([C], dt, 124), 125);
    });

    it(`embedding forward and backward with repeated ids (${dt})`, () => {
      const [V, D, N] = [50, 24, 40];
      const ids = pair([N], "int32", randomData(N, 20, { low: 0, high: 10 }));
      const w = randPair([V, D], dt, 21);
      const out = outPair([N, D], dt);
      cpu().embedding(w.c, ids.c, out.c);
      gpu().embedding(w.g, ids.g, out.g);
      expectClose(out, "embedding", 0);
      const gy = randPair([N, D], dt, 22);
      const gw = outPair([V, D], "float32", 23);
      cpu().embeddingBackward(gy.c, ids.c, gw.c);
      gpu().embeddingBackward(gy.g, ids.g, gw.g);
      expectClose(gw, "embedding backward (fp32 accumulate)", 1e-5);
    });

    it(`cross entropy forward and backward with ignored rows and a scalar loss gradient (${dt})`, () => {
      const [N, C] = [24, 1000];
      const t = randomData(N, 24, { low: 0, high: C });
      t[3] = -100;
      t[17] = -100;
      const targets = pair([N], "int32", t);
      const logits = randPair([N, C], dt, 25);
      const loss = outPair([N], "float32");
      const lse = outPair([N], "float32");
      cpu().crossEntropy(logits.c, targets.c, -100, loss.c, lse.c);
      gpu().crossEntropy(logits.g, targets.g, -100, loss.g, lse.g);
      expectClose(loss, "loss", 1e-5);
      expectClose(lse, "lse", 1e-5);
      expect(values(loss.g, gpu())[3]).toBe(0);
      const gloss = pair([1], "float32", Float64Array.from([1 / 22]));
      const g = outPair([N, C], dt);
      cpu().crossEntropyBackward(logits.c, targets.c, lse.c, gloss.c, -100, g.c);
      gpu().crossEntropyBackward(logits.g, targets.g, lse.g, gloss.g, -100, g.g);
      expectClose(g, "cross entropy backward");
    });
  }

  it("random draws are the CPU backend's Philox stream", () => {
    for (const kind of ["uniform", "normal"] as const) {
      for (const dt of ["float32", "bfloat16"] as DType[]) {
        const o = outPair([1000], dt);
        const state = { seed: 0x1234_5678_9abcn, offset: 4096 };
        cpu().random(kind, o.c, state);
        gpu().random(kind, o.g, state);
        expectClose(o, `${kind} ${dt}`, 1e-6);
      }
    }
  });

  it("fused AdamW matches the CPU update over several tensors, bf16 gradients included", () => {
    const shapes = [[70000], [33, 7], [1]];
    const ps = shapes.map((s, i) => f32Pair(s, 30 + i));
    const gs = shapes.map((s, i) => randPair(s, i === 1 ? "bfloat16" : "float32", 40 + i));
    const ms = shapes.map((s, i) => f32Pair(s, 50 + i));
    const vs = shapes.map((s, i) => randPair(s, "float32", 60 + i, "positive"));
    const hyper = { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: 7 };
    const side = (k: "c" | "g") => (arr: { c: View; g: View }[]) => arr.map((p) => p[k]);
    cpu().adamw(side("c")(ps), side("c")(gs), side("c")(ms), side("c")(vs), hyper);
    gpu().adamw(side("g")(ps), side("g")(gs), side("g")(ms), side("g")(vs), hyper);
    ps.forEach((p, i) => expectClose(p, `param ${i}`, 1e-6));
    ms.forEach((p, i) => expectClose(p, `exp_avg ${i}`, 1e-6));
    vs.forEach((p, i) => expectClose(p, `exp_avg_sq ${i}`, 1e-6));
  });

  it("fused AdamW writes the bf16 copy of each updated parameter, as a cast of it would give (vector and scalar paths)", () => {
    // 70003: a 4-element tail; [33, 7]: odd sizes throughout; the middle one has no copy.
    const shapes = [[70003], [33, 7], [16]];
    const ps = shapes.map((s, i) => f32Pair(s, 130 + i));
    const gs = shapes.map((s, i) => randPair(s, "float32", 140 + i));
    const ms = shapes.map((s, i) => f32Pair(s, 150 + i));
    const vs = shapes.map((s, i) => randPair(s, "float32", 160 + i, "positive"));
    const lps = shapes.map((s, i) => (i === 2 ? null : outPair(s, "bfloat16", 170 + i)));
    const hyper = { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: 3 };
    const side = (k: "c" | "g") => (arr: { c: View; g: View }[]) => arr.map((p) => p[k]);
    cpu().adamw(side("c")(ps), side("c")(gs), side("c")(ms), side("c")(vs), hyper, lps.map((l) => l?.c ?? null));
    gpu().adamw(side("g")(ps), side("g")(gs), side("g")(ms), side("g")(vs), hyper, lps.map((l) => l?.g ?? null));
    ps.forEach((p, i) => expectClose(p, `param ${i}`, 1e-6));
    lps.forEach((l, i) => {
      if (!l) return;
      // Bit for bit: the copy is the GPU's own updated fp32 parameter rounded to bf16.
      const cast = outPair(shapes[i], "bfloat16", 180 + i);
      gpu().copy(ps[i].g, cast.g);
      expect(Array.from(values(l.g, gpu()))).toEqual(Array.from(values(cast.g, gpu())));
      expectClose(l, `bf16 copy ${i}`, 1e-2);
    });
  });

  it("layer norm backward adds into gx (accumulateGx) on the fast, generic and staged paths", () => {
    // [64, 2048] bf16 gy with f32 x: the GPT's fast kernel; float64: the generic kernels; a gx
    // with a row stride the kernels cannot take (a column slice): staged through a temporary.
    for (const [dt, gdt, R, C] of [["float32", "bfloat16", 64, 2048], ["float64", "float64", 6, 40]] as const) {
      const x = randPair([R, C], dt, 300 + C);
      const w = randPair([C], "float32", 301);
      const mean = outPair([R], dt === "float64" ? "float64" : "float32");
      const rstd = outPair([R], dt === "float64" ? "float64" : "float32");
      const out = outPair([R, C], gdt);
      cpu().layerNorm(x.c, w.c, null, 1e-5, out.c, mean.c, rstd.c);
      gpu().layerNorm(x.g, w.g, null, 1e-5, out.g, mean.g, rstd.g);
      const gy = randPair([R, C], gdt, 302);
      const gx = outPair([R, C], dt, 303); // the gradient already there: random, the same on both
      cpu().layerNormBackward(gy.c, x.c, w.c, mean.c, rstd.c, gx.c, null, null, true);
      gpu().layerNormBackward(gy.g, x.g, w.g, mean.g, rstd.g, gx.g, null, null, true);
      expectClose(gx, `accumulated gx ${dt}`, dt === "float64" ? 1e-9 : 1e-4);
    }
    const x = randPair([5, 16], "float32", 310);
    const mean = outPair([5], "float32");
    const rstd = outPair([5], "float32");
    const out = outPair([5, 16], "float32");
    cpu().layerNorm(x.c, null, null, 1e-5, out.c, mean.c, rstd.c);
    gpu().layerNorm(x.g, null, null, 1e-5, out.g, mean.g, rstd.g);
    const gy = randPair([5, 16], "float32", 311);
    const wide = outPair([16, 5], "float32", 312);
    const gx = mapPair(wide, (v) => ({ ...v, shape: [5, 16], strides: [1, 5] }));
    cpu().layerNormBackward(gy.c, x.c, null, mean.c, rstd.c, gx.c, null, null, true);
    gpu().layerNormBackward(gy.g, x.g, null, mean.g, rstd.g, gx.g, null, null, true);
    expectClose(gx, "accumulated gx, transposed layout", 1e-4);
  });

  it("mixed-precision layer norm on the fast kernels: f32 -> bf16 / f16 and bf16 -> f32, then their backward", () => {
    // 2048: the GPT's width; 200: fewer 8-element accesses than a warp has threads; 204: a multiple
    // of 4 but not 8, so the scalar kernels (float32 alone would still take 16-byte words).
    for (const [R, C] of [[64, 2048], [7, 200], [5, 204]]) {
      checkMixedLayerNorm("float32", "bfloat16", "float32", R, C, 200 + C);
      checkMixedLayerNorm("bfloat16", "float32", "bfloat16", R, C, 210 + C);
    }
    checkMixedLayerNorm("float32", "float16", "float16", 64, 2048, 220);
    checkMixedLayerNorm("float16", "float32", "float32", 7, 200, 230);
  });

  it("layer norm of float64 rows keeps float64 statistics (generic kernels)", () => {
    const x = randPair([33, 70], "float64", 130);
    checkLayerNorm("float64", x, randPair([70], "float64", 131), randPair([70], "float64", 132), 133);
  });

  it("fused AdamW: lengths not a multiple of 4, several chunks, bf16 gradients and state, a misaligned view", () => {
    // 2 * 65536 + 4099: three chunks, the last one short and not a multiple of 4.
    const shapes = [[2 * 65536 + 4099], [4097], [1026], [7], [3]];
    const ps = shapes.map((s, i) => f32Pair(s, 140 + i));
    const gs = shapes.map((s, i) => randPair(s, i % 2 === 0 ? "bfloat16" : "float32", 150 + i));
    const ms = shapes.map((s, i) => f32Pair(s, 160 + i));
    const vs = shapes.map((s, i) => randPair(s, "float32", 170 + i, "positive"));
    // One element into flat buffers: 4 bytes past a 16-byte boundary, so only the scalar path fits.
    const shifted = (dtype: DType, seed: number, kind?: "positive") =>
      mapPair(randPair([5001], dtype, seed, kind), (v) => ({ ...v, shape: [5000], offset: 1 }));
    ps.push(shifted("float32", 180));
    gs.push(shifted("float32", 181));
    ms.push(shifted("float32", 182));
    vs.push(shifted("float32", 183, "positive"));
    // bfloat16 parameters and state (8-byte words), bf16 gradient.
    ps.push(randPair([4102], "bfloat16", 184));
    gs.push(randPair([4102], "bfloat16", 185));
    ms.push(randPair([4102], "bfloat16", 186));
    vs.push(randPair([4102], "bfloat16", 187, "positive"));
    const side = (k: "c" | "g") => (arr: Pair[]) => arr.map((p) => p[k]);
    for (const [step, maximize] of [[3, false], [4, true]] as const) {
      const hyper = { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step, maximize };
      cpu().adamw(side("c")(ps), side("c")(gs), side("c")(ms), side("c")(vs), hyper);
      gpu().adamw(side("g")(ps), side("g")(gs), side("g")(ms), side("g")(vs), hyper);
    }
    const tol = (p: Pair) => (p.c.storage.dtype === "float32" ? 1e-6 : 1e-2);
    ps.forEach((p, i) => expectClose(p, `param ${i}`, tol(p)));
    ms.forEach((p, i) => expectClose(p, `exp_avg ${i}`, tol(p)));
    vs.forEach((p, i) => expectClose(p, `exp_avg_sq ${i}`, tol(p)));
  });

  it("global norm of many tensors equals the norm of their concatenation", () => {
    const xs = [[100000], [3, 5], [7]].map((s, i) => randPair(s, "float32", 70 + i));
    const out = gpu().alloc("float32", 1);
    gpu().globalNorm(xs.map((x) => x.g), { storage: out, shape: [1], strides: [1], offset: 0 });
    let ss = 0;
    for (const x of xs) for (const v of values(x.c, cpu())) ss += v * v;
    const got = values({ storage: out, shape: [1], strides: [1], offset: 0 }, gpu())[0];
    expect(Math.abs(got - Math.sqrt(ss)) / Math.sqrt(ss)).toBeLessThan(1e-6);
  });

  it("an out-of-range id or target surfaces at the next read with the CPU backend's message", () => {
    const ids = pair([3], "int32", Float64Array.from([1, 300, 2]));
    const w = randPair([256, 4], "float32", 80);
    const out = outPair([3, 4], "float32");
    gpu().embedding(w.g, ids.g, out.g);
    expect(() => values(out.g, gpu())).toThrow("embedding: index 300 at row 1 is out of range for an embedding of 256 rows");
    expect(() => gpu().synchronize()).not.toThrow();
    const logits = randPair([2, 17], "float32", 81);
    const t = pair([2], "int32", Float64Array.from([3, 17]));
    const loss = outPair([2], "float32");
    const lse = outPair([2], "float32");
    gpu().crossEntropy(logits.g, t.g, -100, loss.g, lse.g);
    expect(() => gpu().synchronize()).toThrow("crossEntropy: target 17 at row 1 is out of range for 17 classes");
  });

  it("counts memory, frees in stream order and reports an impossible allocation clearly", () => {
    const b = gpu();
    const before = b.memoryStats();
    const s = b.alloc("float32", 1 << 20);
    expect(b.memoryStats().allocated).toBe(before.allocated + 4 * (1 << 20));
    expect(b.memoryStats().reserved).toBeGreaterThanOrEqual(b.memoryStats().allocated);
    b.free(s);
    expect(b.memoryStats().allocated).toBe(before.allocated);
    expect(() => b.alloc("float32", 2 ** 50)).toThrow(/CUDA out of memory on cuda:0[\s\S]*activation checkpointing/);
  });
});

if (!hasGpu) describe("neural-network ops on CUDA", () => it.skip(NO_GPU, () => {}));
