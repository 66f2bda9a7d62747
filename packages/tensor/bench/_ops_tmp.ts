import type { View } from "/work/main/packages/tensor/src/backend";
import { cpuBackend } from "/work/main/packages/tensor/src/cpu";
const be = cpuBackend();
function cs(shape: number[]) { const s: number[] = []; let a = 1; for (let i = shape.length - 1; i >= 0; i--) { s[i] = a; a *= shape[i]; } return s; }
function mk(shape: number[], dtype: any = "float32"): View { const n = shape.reduce((a, b) => a * b, 1); const st = be.alloc(dtype, n); if (dtype !== "int32") for (let i = 0; i < n; i++) (st.data as any)[i] = Math.sin(i * 0.37); return { storage: st, shape, strides: cs(shape), offset: 0 }; }
function T(v: View, perm: number[]): View { return { ...v, shape: perm.map(p => v.shape[p]), strides: perm.map(p => v.strides[p]) }; }
function time(name: string, f: () => void, flops = 0) { f(); let ms = 1e9; for (let i = 0; i < 7; i++) { const t = performance.now(); f(); ms = Math.min(ms, performance.now() - t); } console.log(name.padEnd(50), ms.toFixed(2).padStart(8), "ms", flops ? (flops / ms / 1e6).toFixed(2) + " GF/s" : ""); }
const N = 2048, C = 128;
const x = mk([1, N, C]), w = mk([1, C, 3 * C]), o = mk([1, N, 3 * C]);
time("mm fwd [2048,128]x[128,384]", () => be.matmul(x, w, o), 2 * N * C * 3 * C);
const wt = mk([1, 3 * C, C]);
time("mm fwd x @ W^T (W [384,128])", () => be.matmul(x, T(wt, [0, 2, 1]), o), 2 * N * C * 3 * C);
const g = mk([1, N, 3 * C]), gw = mk([1, C, 3 * C]);
time("mm wgrad x^T @ g [128,2048]x[2048,384] beta1", () => be.matmul(T(x, [0, 2, 1]), g, gw, { beta: 1 }), 2 * N * C * 3 * C);
const gx = mk([1, N, C]);
time("mm dgrad g @ W^T", () => be.matmul(g, T(w, [0, 2, 1]), gx), 2 * N * C * 3 * C);
const h = mk([1, N, 4 * C]), w1 = mk([1, C, 4 * C]), b1 = mk([4 * C]);
time("mm fc1 bias+gelu [2048,128]x[128,512]", () => be.matmul(x, w1, h, { bias: b1, gelu: true }), 2 * N * C * 4 * C);
const B = 16, H = 4, Tt = 128, D = 32;
const qkv = mk([B, Tt, 3, H, D]);
const q: View = { storage: qkv.storage, shape: [B, H, Tt, D], strides: [Tt * 3 * C, D, 3 * C, 1], offset: 0 };
const k: View = { ...q, offset: C }, v: View = { ...q, offset: 2 * C };
const ao = mk([B, H, Tt, D]), lse = mk([B, H, Tt]);
time("attention fwd causal B16 H4 T128 D32", () => be.attention(q, k, v, ao, lse, true, 0.17), 2 * 2 * B * H * Tt * Tt * D / 2);
const gq = mk([B, H, Tt, D]), gk = mk([B, H, Tt, D]), gv = mk([B, H, Tt, D]);
time("attention bwd causal", () => be.attentionBackward(q, k, v, ao, lse, ao, gq, gk, gv, true, 0.17), 4 * 2 * B * H * Tt * Tt * D / 2);
const big = mk([N, 4 * C]), big2 = mk([N, 4 * C]), big3 = mk([N, 4 * C]);
time("add [2048,512]", () => be.binary("add", big, big2, big3));
time("add bias bcast [2048,512]+[512]", () => be.binary("add", big, { ...b1, shape: [N, 4 * C], strides: [0, 1] }, big3));
time("gelu [2048,512]", () => be.unary("gelu", big, big3));
time("gelu_backward [2048,512]", () => be.binary("gelu_backward", big, big2, big3));
const tsrc = T(mk([4 * C, N]), [1, 0]); time("copy transpose [2048,512]", () => be.copy(tsrc, big3)); time("copy contiguous [2048,512]", () => be.copy(big, big3));
time("sum [2048,512]->[1,512]", () => be.reduce("sum", big, mk([1, 4 * C])));
time("sum [2048,512]->[2048,1]", () => be.reduce("sum", big, mk([N, 1])));
const ln = mk([N, C]), lo = mk([N, C]), lw = mk([C]), lb = mk([C]), mean = mk([N]), rstd = mk([N]);
time("layernorm fwd [2048,128]", () => be.layerNorm(ln, lw, lb, 1e-5, lo, mean, rstd));
time("layernorm bwd", () => be.layerNormBackward(lo, ln, lw, mean, rstd, mk([N, C]), lw, lb));
const V = 65, logits = mk([N, V]), tg = mk([N], "int32"), loss = mk([N]), l2 = mk([N]);
time("ce fwd [2048,65]", () => be.crossEntropy(logits, tg, -100, loss, l2));
time("ce bwd", () => be.crossEntropyBackward(logits, tg, l2, loss, -100, mk([N, V])));
const emb = mk([V, C]);
time("embedding [2048] -> [2048,128]", () => be.embedding(emb, tg, lo));
time("embedding bwd", () => be.embeddingBackward(lo, tg, emb));
const params = [mk([900000])], grads = [mk([900000])], m1 = [mk([900000])], m2 = [mk([900000])];
time("adamw 0.9M", () => be.adamw(params, grads, m1, m2, { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: 3 }));
time("softmax [2048,128]", () => be.softmax(ln, lo, false));
