/**
 * Scaled dot-product attention over [B, H, T, D], flash-attention style in spirit: per (batch,
 * head) the queries are processed in blocks, the scores of one block live only in a float64
 * scratch, and only logsumexp per query is saved, so backward recomputes probabilities instead
 * of storing a [T, T] matrix. The products go through the packed `gemm`, and with a causal mask
 * a query block only multiplies against the keys it can see (j <= i), skipping about half the work.
 *
 * k and v may have a different length (Tk) than q; v may have its own head width.
 */
import type { View } from "../backend";
import { encodeElement } from "../dtype";
import type { MatOperand } from "./matmul";
import { gemm } from "./matmul";
import { dataOf } from "./storage";
import { decodeRow, encodeRow, lutFor, readAt } from "./strided";

const QB = 32;

/** Operand for the [T, D] matrix of (b, h) starting at row t0; transposed reads it as [D, T]. */
function headOperand(v: View, b: number, h: number, t0: number, transposed: boolean): MatOperand {
  const [s0, s1, s2, s3] = v.strides;
  return {
    data: dataOf(v),
    off: v.offset + b * s0 + h * s1 + t0 * s2,
    rs: transposed ? s3 : s2,
    cs: transposed ? s2 : s3,
    lut: lutFor(v.storage.dtype),
  };
}

function scratchOperand(data: Float64Array, ld: number, transposed: boolean): MatOperand {
  return { data, off: 0, rs: transposed ? 1 : ld, cs: transposed ? ld : 1, lut: null };
}

/**
 * Fills p (qb x kEnd, leading dim kEnd) with scale * Q_blk K^T, masked entries as -Infinity.
 * Returns nothing; the caller turns scores into probabilities its own way.
 */
function scores(
  q: View,
  k: View,
  b: number,
  h: number,
  i0: number,
  qb: number,
  kEnd: number,
  causal: boolean,
  scale: number,
  p: Float64Array,
): void {
  const D = q.shape[3];
  const { c, ldc } = gemm(qb, kEnd, D, headOperand(q, b, h, i0, false), headOperand(k, b, h, 0, true));
  for (let i = 0; i < qb; i++) {
    const vis = causal ? Math.min(kEnd, i0 + i + 1) : kEnd;
    const po = i * kEnd;
    const co = i * ldc;
    for (let j = 0; j < vis; j++) p[po + j] = scale * c[co + j];
    for (let j = vis; j < kEnd; j++) p[po + j] = -Infinity;
  }
}

export function attention(q: View, k: View, v: View, out: View, lse: View, causal: boolean, scale: number): void {
  const [B, H, Tq] = q.shape;
  const Tk = k.shape[2];
  const Dv = v.shape[3];
  const od = dataOf(out);
  const ot = out.storage.dtype;
  const ld = dataOf(lse);
  const lt = lse.storage.dtype;
  const p = new Float64Array(QB * Tk);
  const row = new Float64Array(Dv);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      for (let i0 = 0; i0 < Tq; i0 += QB) {
        const qb = Math.min(QB, Tq - i0);
        const kEnd = causal ? Math.min(Tk, i0 + qb) : Tk;
        scores(q, k, b, h, i0, qb, kEnd, causal, scale, p);
        for (let i = 0; i < qb; i++) {
          const po = i * kEnd;
          let m = -Infinity;
          for (let j = 0; j < kEnd; j++) if (p[po + j] > m) m = p[po + j];
          let s = 0;
          for (let j = 0; j < kEnd; j++) {
            const e = Math.exp(p[po + j] - m);
            p[po + j] = e;
            s += e;
          }
          const inv = 1 / s;
          for (let j = 0; j < kEnd; j++) p[po + j] *= inv;
          ld[lse.offset + b * lse.strides[0] + h * lse.strides[1] + (i0 + i) * lse.strides[2]] = encodeElement(
            lt,
            m + Math.log(s),
          );
        }
        const { c, ldc } = gemm(qb, Dv, kEnd, scratchOperand(p, kEnd, false), headOperand(v, b, h, 0, false));
        for (let i = 0; i < qb; i++) {
          for (let d = 0; d < Dv; d++) row[d] = c[i * ldc + d];
          const oo = out.offset + b * out.strides[0] + h * out.strides[1] + (i0 + i) * out.strides[2];
          encodeRow(row, 0, Dv, od, ot, oo, out.strides[3]);
        }
      }
    }
  }
}

/**
 * dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(dO * O)), dQ = scale * dS K, dK = scale * dS^T Q,
 * with P recomputed from the saved lse. gq, gk and gv are overwritten.
 */
export function attentionBackward(
  q: View,
  k: View,
  v: View,
  out: View,
  lse: View,
  gout: View,
  gq: View,
  gk: View,
  gv: View,
  causal: boolean,
  scale: number,
): void {
  const [B, H, Tq, D] = q.shape;
  const Tk = k.shape[2];
  const Dv = v.shape[3];
  const ld = dataOf(lse);
  const lt = lse.storage.dtype;
  const od = dataOf(out);
  const gd = dataOf(gout);
  const p = new Float64Array(QB * Tk);
  const dk = new Float64Array(Tk * D);
  const dv = new Float64Array(Tk * Dv);
  const delta = new Float64Array(QB);
  const orow = new Float64Array(Dv);
  const grow = new Float64Array(Dv);
  const qrow = new Float64Array(D);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      dk.fill(0);
      dv.fill(0);
      for (let i0 = 0; i0 < Tq; i0 += QB) {
        const qb = Math.min(QB, Tq - i0);
        const kEnd = causal ? Math.min(Tk, i0 + qb) : Tk;
        scores(q, k, b, h, i0, qb, kEnd, causal, scale, p);
        for (let i = 0; i < qb; i++) {
          const l = readAt(ld, lt, lse.offset + b * lse.strides[0] + h * lse.strides[1] + (i0 + i) * lse.strides[2]);
          const po = i * kEnd;
          for (let j = 0; j < kEnd; j++) p[po + j] = Math.exp(p[po + j] - l);
          // delta_i = sum_d dO[i, d] * O[i, d]
          const oo = out.offset + b * out.strides[0] + h * out.strides[1] + (i0 + i) * out.strides[2];
          const go = gout.offset + b * gout.strides[0] + h * gout.strides[1] + (i0 + i) * gout.strides[2];
          decodeRow(od, out.storage.dtype, oo, out.strides[3], Dv, orow, 0);
          decodeRow(gd, gout.storage.dtype, go, gout.strides[3], Dv, grow, 0);
          let s = 0;
          for (let d = 0; d < Dv; d++) s += orow[d] * grow[d];
          delta[i] = s;
        }
        const dO = headOperand(gout, b, h, i0, false);
        // dV[0:kEnd] += P^T dO
        let r = gemm(kEnd, Dv, qb, scratchOperand(p, kEnd, true), dO);
        for (let j = 0; j < kEnd; j++) for (let d = 0; d < Dv; d++) dv[j * Dv + d] += r.c[j * r.ldc + d];
        // dS = P * (dO V^T - delta), in place over P
        r = gemm(qb, kEnd, Dv, dO, headOperand(v, b, h, 0, true));
        for (let i = 0; i < qb; i++) {
          const po = i * kEnd;
          const co = i * r.ldc;
          for (let j = 0; j < kEnd; j++) p[po + j] *= r.c[co + j] - delta[i];
        }
        // dQ_blk = scale * dS K
        r = gemm(qb, D, kEnd, scratchOperand(p, kEnd, false), headOperand(k, b, h, 0, false));
        for (let i = 0; i < qb; i++) {
          for (let d = 0; d < D; d++) qrow[d] = scale * r.c[i * r.ldc + d];
          const o = gq.offset + b * gq.strides[0] + h * gq.strides[1] + (i0 + i) * gq.strides[2];
          encodeRow(qrow, 0, D, dataOf(gq), gq.storage.dtype, o, gq.strides[3]);
        }
        // dK[0:kEnd] += scale * dS^T Q_blk
        r = gemm(kEnd, D, qb, scratchOperand(p, kEnd, true), headOperand(q, b, h, i0, false));
        for (let j = 0; j < kEnd; j++) for (let d = 0; d < D; d++) dk[j * D + d] += scale * r.c[j * r.ldc + d];
      }
      for (let j = 0; j < Tk; j++) {
        const ko = gk.offset + b * gk.strides[0] + h * gk.strides[1] + j * gk.strides[2];
        encodeRow(dk, j * D, D, dataOf(gk), gk.storage.dtype, ko, gk.strides[3]);
        const vo = gv.offset + b * gv.strides[0] + h * gv.strides[1] + j * gv.strides[2];
        encodeRow(dv, j * Dv, Dv, dataOf(gv), gv.storage.dtype, vo, gv.strides[3]);
      }
    }
  }
}
