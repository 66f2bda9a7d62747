/**
 * Matrix multiply: the hottest code of CPU training, so it is a small GotoBLAS in plain TypeScript.
 *
 * Operands of any strides and dtype are packed into float64 panels (MR rows of A or NR columns
 * of B interleaved along k), then a 4x4 register-blocked micro-kernel runs over each panel pair
 * keeping 16 accumulators in locals: 32 flops per 8 loads instead of the 2 per 3 memory ops of a
 * naive i-k-j loop. Packing into float64 rather than float32 is deliberate: V8 computes in doubles,
 * so float32 panels cost a conversion per load (measured ~25% slower) and float64 accumulates more
 * accurately. Blocking over k (KC) and rows (MC) keeps a B panel in L1 and the packed A block in L2.
 *
 * `gemm` is also used by attention on its float64 scratch matrices.
 */
import type { MatmulOptions, View } from "../backend";
import type { HostArray } from "../dtype";
import { gelu, geluGrad } from "./elementwise";
import { dataOf } from "./storage";
import { decodeRow, encodeRow, loadView, lutFor, storeView } from "./strided";

/** A strided matrix operand: element (i, j) is data[off + i*rs + j*cs] (decoded through lut if set). */
export interface MatOperand {
  readonly data: HostArray;
  readonly off: number;
  readonly rs: number;
  readonly cs: number;
  readonly lut: Float32Array | null;
}

export interface GemmResult {
  /** Row-major product, rows padded to `ldc` columns; shared, valid until the next `gemm` call. */
  readonly c: Float64Array;
  readonly ldc: number;
}

const MR = 4;
const NR = 4;
const KC = 256;
const MC = 128;
const NC = 512;

let packA = new Float64Array(MC * KC);
let packB = new Float64Array(NC * KC);
let cBuf = new Float64Array(1024);

/** Matrix of a view's last two dims at batch index `b` (size-1 batch broadcasts). */
export function operandOf(v: View, b: number): MatOperand {
  const nd = v.shape.length;
  const batchOff = nd > 2 && v.shape[0] !== 1 ? b * v.strides[0] : 0;
  return {
    data: dataOf(v),
    off: v.offset + batchOff,
    rs: v.strides[nd - 2],
    cs: v.strides[nd - 1],
    lut: lutFor(v.storage.dtype),
  };
}

/**
 * Packs `lanes` (<= R) source lines of length kc into dst[dOff + p*R + l]; lanes past `lanes` are zeroed
 * so edge tiles can run the full micro-kernel. sP steps along k, sL across lanes; the loop order
 * follows whichever is the smaller stride so the source is read as contiguously as it allows.
 */
function pack(
  src: HostArray,
  lut: Float32Array | null,
  o: number,
  sP: number,
  sL: number,
  lanes: number,
  R: number,
  kc: number,
  dst: Float64Array,
  dOff: number,
): void {
  if (lanes < R) for (let p = 0; p < kc; p++) for (let l = lanes; l < R; l++) dst[dOff + p * R + l] = 0;
  if (Math.abs(sL) < Math.abs(sP)) {
    for (let p = 0; p < kc; p++) {
      let s = o + p * sP;
      let d = dOff + p * R;
      if (lut === null) for (let l = 0; l < lanes; l++, s += sL) dst[d++] = src[s];
      else for (let l = 0; l < lanes; l++, s += sL) dst[d++] = lut[src[s]];
    }
  } else {
    for (let l = 0; l < lanes; l++) {
      let s = o + l * sL;
      let d = dOff + l;
      if (lut === null) for (let p = 0; p < kc; p++, s += sP, d += R) dst[d] = src[s];
      else for (let p = 0; p < kc; p++, s += sP, d += R) dst[d] = lut[src[s]];
    }
  }
}

/** C[4x4 tile at co] += A panel (4 x kc) @ B panel (kc x 4). */
function kernel4x4(kc: number, A: Float64Array, ao: number, B: Float64Array, bo: number, C: Float64Array, co: number, ldc: number): void {
  let c00 = 0, c01 = 0, c02 = 0, c03 = 0;
  let c10 = 0, c11 = 0, c12 = 0, c13 = 0;
  let c20 = 0, c21 = 0, c22 = 0, c23 = 0;
  let c30 = 0, c31 = 0, c32 = 0, c33 = 0;
  for (let p = 0; p < kc; p++) {
    const a0 = A[ao], a1 = A[ao + 1], a2 = A[ao + 2], a3 = A[ao + 3];
    const b0 = B[bo], b1 = B[bo + 1], b2 = B[bo + 2], b3 = B[bo + 3];
    c00 += a0 * b0; c01 += a0 * b1; c02 += a0 * b2; c03 += a0 * b3;
    c10 += a1 * b0; c11 += a1 * b1; c12 += a1 * b2; c13 += a1 * b3;
    c20 += a2 * b0; c21 += a2 * b1; c22 += a2 * b2; c23 += a2 * b3;
    c30 += a3 * b0; c31 += a3 * b1; c32 += a3 * b2; c33 += a3 * b3;
    ao += 4;
    bo += 4;
  }
  C[co] += c00; C[co + 1] += c01; C[co + 2] += c02; C[co + 3] += c03;
  co += ldc;
  C[co] += c10; C[co + 1] += c11; C[co + 2] += c12; C[co + 3] += c13;
  co += ldc;
  C[co] += c20; C[co + 1] += c21; C[co + 2] += c22; C[co + 3] += c23;
  co += ldc;
  C[co] += c30; C[co + 1] += c31; C[co + 2] += c32; C[co + 3] += c33;
}

/** C = A @ B in float64, A: M x K, B: K x N. */
export function gemm(M: number, N: number, K: number, A: MatOperand, B: MatOperand): GemmResult {
  const Mp = Math.ceil(M / MR) * MR;
  const ldc = Math.ceil(N / NR) * NR;
  if (cBuf.length < Mp * ldc) cBuf = new Float64Array(Mp * ldc);
  const C = cBuf;
  C.fill(0, 0, Mp * ldc);
  const kcMax = Math.min(KC, K);
  if (packA.length < MC * kcMax) packA = new Float64Array(MC * kcMax);
  if (packB.length < NC * kcMax) packB = new Float64Array(NC * kcMax);
  const Ap = packA;
  const Bp = packB;
  for (let jc = 0; jc < N; jc += NC) {
    const nc = Math.min(NC, N - jc);
    for (let pc = 0; pc < K; pc += KC) {
      const kc = Math.min(KC, K - pc);
      for (let jr = 0; jr < nc; jr += NR) {
        const o = B.off + pc * B.rs + (jc + jr) * B.cs;
        pack(B.data, B.lut, o, B.rs, B.cs, Math.min(NR, nc - jr), NR, kc, Bp, jr * kc);
      }
      for (let ic = 0; ic < M; ic += MC) {
        const mc = Math.min(MC, M - ic);
        for (let ir = 0; ir < mc; ir += MR) {
          const o = A.off + (ic + ir) * A.rs + pc * A.cs;
          pack(A.data, A.lut, o, A.cs, A.rs, Math.min(MR, mc - ir), MR, kc, Ap, ir * kc);
        }
        for (let jr = 0; jr < nc; jr += NR) {
          for (let ir = 0; ir < mc; ir += MR) kernel4x4(kc, Ap, ir * kc, Bp, jr * kc, C, (ic + ir) * ldc + jc + jr, ldc);
        }
      }
    }
  }
  return { c: C, ldc };
}

// geluAux / geluGradAux have out's shape and layout: row i of the (possibly batch-folded) product.
const rowStride = (v: View): number => v.strides[v.shape.length - 2];
const colStride = (v: View): number => v.strides[v.shape.length - 1];

/**
 * out[b] = epilogue(alpha * a[b] @ b[b] + beta * out[b]) with epilogue = (+ bias), then (store the
 * pre-activation to geluAux, gelu), or (times GELU'(geluGradAux)), then the optional sums.
 * beta = 0 never reads out, so NaN garbage in a fresh output cannot leak in.
 */
export function matmul(a: View, b: View, out: View, options: MatmulOptions = {}): void {
  const alpha = options.alpha ?? 1;
  const beta = options.beta ?? 0;
  const nd = out.shape.length;
  let batch = nd > 2 ? out.shape[0] : 1;
  let M = out.shape[nd - 2];
  const N = out.shape[nd - 1];
  const K = a.shape[a.shape.length - 1];
  if (M === 0 || N === 0 || batch === 0) return;
  const ors = out.strides[nd - 2];
  const ocs = out.strides[nd - 1];
  // A batch of rows times one shared b (a Linear layer on [B, T, C]) is one tall product when the
  // rows of a and out continue across the batch: b is then packed once instead of once per batch.
  const bShared = nd <= 2 || b.shape.length <= 2 || b.shape[0] === 1 || b.strides[0] === 0;
  const aRank = a.shape.length;
  const aShared = aRank <= 2 || a.shape[0] === 1 || a.strides[0] === 0;
  if (
    batch > 1 &&
    bShared &&
    !aShared &&
    a.strides[0] === M * a.strides[aRank - 2] &&
    out.strides[0] === M * ors
  ) {
    M *= batch;
    batch = 1;
  }
  const bias = options.bias ? loadView(options.bias) : null;
  const useGelu = options.gelu === true;
  const aux = options.geluAux ?? null;
  const gradAux = options.geluGradAux ?? null;
  const colSums = options.outColSums ? new Float64Array(N) : null;
  if ((aux || gradAux || colSums || options.aRowSums) && batch !== 1) {
    throw new RangeError("matmul: geluAux, geluGradAux, outColSums and aRowSums need a 2-D product (batch 1)");
  }
  const od = dataOf(out);
  const odt = out.storage.dtype;
  const row = new Float64Array(N);
  const auxRow = new Float64Array(N);
  for (let bi = 0; bi < batch; bi++) {
    const { c, ldc } = gemm(M, N, K, operandOf(a, bi), operandOf(b, bi));
    const obase = out.offset + (nd > 2 ? bi * out.strides[0] : 0);
    for (let i = 0; i < M; i++) {
      const oo = obase + i * ors;
      const co = i * ldc;
      if (beta !== 0) {
        decodeRow(od, odt, oo, ocs, N, row, 0);
        for (let j = 0; j < N; j++) row[j] = alpha * c[co + j] + beta * row[j];
      } else if (alpha !== 1) {
        for (let j = 0; j < N; j++) row[j] = alpha * c[co + j];
      } else {
        for (let j = 0; j < N; j++) row[j] = c[co + j];
      }
      if (bias !== null) for (let j = 0; j < N; j++) row[j] += bias[j];
      if (aux) encodeRow(row, 0, N, dataOf(aux), aux.storage.dtype, aux.offset + i * rowStride(aux), colStride(aux));
      if (useGelu) for (let j = 0; j < N; j++) row[j] = gelu(row[j]);
      if (gradAux) {
        decodeRow(dataOf(gradAux), gradAux.storage.dtype, gradAux.offset + i * rowStride(gradAux), colStride(gradAux), N, auxRow, 0);
        for (let j = 0; j < N; j++) row[j] *= geluGrad(auxRow[j]);
      }
      if (colSums) for (let j = 0; j < N; j++) colSums[j] += row[j];
      encodeRow(row, 0, N, od, odt, oo, ocs);
    }
  }
  if (colSums && options.outColSums) storeView(colSums, options.outColSums);
  if (options.aRowSums) {
    const av = loadView(a.shape.length === 3 ? { storage: a.storage, shape: a.shape.slice(1), strides: a.strides.slice(1), offset: a.offset } : a);
    const sums = new Float64Array(M);
    for (let m = 0; m < M; m++) {
      let t = 0;
      for (let k = 0; k < K; k++) t += av[m * K + k];
      sums[m] = t;
    }
    storeView(sums, options.aRowSums);
  }
}
