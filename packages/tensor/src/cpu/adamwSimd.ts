/**
 * The fp32 AdamW update in WebAssembly SIMD, four lanes at a time (wasm/adamw.wat). Offload runs
 * the optimizer step over billions of elements on the CPU, where the scalar loop spends its time
 * in float64 division and square root; f32x4 does four of each per instruction, as PyTorch's
 * vectorised CPU AdamW computes fp32 tensors in fp32.
 *
 * The kernel works in its own small memory, so each call streams the tensors through it in chunks
 * that stay in cache: copy a chunk of p, g, m, v in, update, copy p, m, v out. Each thread (the
 * CPU optimizer's workers too) instantiates its own. Every element's update depends on that
 * element alone and the chunking does not change the arithmetic, so any split over threads is
 * bit-identical to one thread's. FULGUR_CPU_SIMD=0 keeps the scalar float64 loop.
 */
import { adamwWasm } from "./wasm/adamw.wasm";

/** Elements per chunk: the kernel's layout (adamw.wat) holds four arrays of this many floats. */
const CHUNK = 8192;

interface Kernel {
  readonly run: (n: number, b1: number, b2: number, c1: number, c2: number, stepSize: number, invSqrtBc2: number, eps: number, decay: number, sign: number) => void;
  readonly p: Float32Array;
  readonly g: Float32Array;
  readonly m: Float32Array;
  readonly v: Float32Array;
  /** Writes the bf16 bits of p's first n elements into `lp`. */
  readonly bf16: (n: number) => void;
  readonly lp: Uint16Array;
}

let kernel: Kernel | null | undefined;

// The few WebAssembly globals used here (the package's lib settings carry no WebAssembly types).
interface WasmGlobals {
  Memory: new (d: { initial: number; maximum: number }) => { buffer: ArrayBuffer };
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
}
const wasm = (globalThis as unknown as { WebAssembly?: WasmGlobals }).WebAssembly;

function load(): Kernel | null {
  if (kernel !== undefined) return kernel;
  if (process.env.FULGUR_CPU_SIMD === "0") return (kernel = null);
  if (!wasm) return (kernel = null);
  try {
    const memory = new wasm.Memory({ initial: 3, maximum: 3 });
    const instance = new wasm.Instance(new wasm.Module(Buffer.from(adamwWasm, "base64")), { env: { memory } });
    const f = new Float32Array(memory.buffer);
    kernel = {
      run: instance.exports.adamw as Kernel["run"],
      p: f.subarray(0, CHUNK),
      g: f.subarray(CHUNK, 2 * CHUNK),
      m: f.subarray(2 * CHUNK, 3 * CHUNK),
      v: f.subarray(3 * CHUNK, 4 * CHUNK),
      bf16: instance.exports.bf16 as Kernel["bf16"],
      lp: new Uint16Array(memory.buffer, 4 * 4 * CHUNK, CHUNK),
    };
  } catch {
    // A runtime without WebAssembly SIMD: the scalar loop does the step.
    kernel = null;
  }
  return kernel;
}

/** The constants of one step, as adamw.ts derives them from the hyperparameters. */
export interface AdamWConstants {
  readonly beta1: number;
  readonly beta2: number;
  readonly c1: number;
  readonly c2: number;
  readonly stepSize: number;
  readonly invSqrtBc2: number;
  readonly eps: number;
  readonly decay: number;
  readonly sign: number;
}

/**
 * Updates n fp32 elements of p, m, v in place from g, each array from its own offset, and with `lp`
 * writes the bf16 bits of the updated p into it from `lpo` (in the same pass, while each chunk is in
 * cache). Returns false, having done nothing, where WebAssembly SIMD is not available.
 */
export function adamwF32Simd(p: Float32Array, po: number, g: Float32Array, go: number, m: Float32Array, mo: number, v: Float32Array, vo: number, n: number, k: AdamWConstants, lp: Uint16Array | null = null, lpo = 0): boolean {
  const w = load();
  if (!w) return false;
  for (let s = 0; s < n; s += CHUNK) {
    const c = Math.min(CHUNK, n - s);
    w.p.set(p.subarray(po + s, po + s + c));
    w.g.set(g.subarray(go + s, go + s + c));
    w.m.set(m.subarray(mo + s, mo + s + c));
    w.v.set(v.subarray(vo + s, vo + s + c));
    // Lanes past c (the last chunk's tail) compute on stale values and are not copied out.
    w.run((c + 3) & ~3, k.beta1, k.beta2, k.c1, k.c2, k.stepSize, k.invSqrtBc2, k.eps, k.decay, k.sign);
    p.set(w.p.subarray(0, c), po + s);
    if (lp) {
      w.bf16((c + 3) & ~3);
      lp.set(w.lp.subarray(0, c), lpo + s);
    }
    m.set(w.m.subarray(0, c), mo + s);
    v.set(w.v.subarray(0, c), vo + s);
  }
  return true;
}
