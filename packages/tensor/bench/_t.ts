import type { View } from "../src/backend";
import { cpuBackend } from "../src/cpu";
const be = cpuBackend();
const N = 2048, D = 512;
function mk(shape: number[], strides: number[]): View { const st = be.alloc("float32", N * (D + 1) + 1000); for (let i = 0; i < st.length; i++) st.data[i] = Math.sin(i); return { storage: st, shape, strides, offset: 0 }; }
const a = mk([N, D], [D, 1]), b = mk([N, D], [D, 1]), o = mk([N, D], [D, 1]);
const bb = mk([N, D], [0, 1]);
const bp = mk([N, D], [D + 1, 1]);
function time(name: string, f: () => void) { for (let i = 0; i < 3; i++) f(); let best = 1e9; for (let i = 0; i < 15; i++) { const t = performance.now(); f(); best = Math.min(best, performance.now() - t); } console.log(name, best.toFixed(2)); }
time("contig", () => be.binary("add", a, b, o));
time("bcast", () => be.binary("add", a, bb, o));
time("padded", () => be.binary("add", a, bp, o));
time("contig", () => be.binary("add", a, b, o));
