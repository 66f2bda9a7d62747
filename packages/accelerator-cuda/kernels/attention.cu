// attention.cu: scaled dot-product attention over [B, H, T, D] with an optional causal mask,
// forward and backward (Backend.attention and attentionBackward), flash-attention style:
// scores live only in shared memory one 32x32 tile at a time, the softmax is computed online
// (running max and sum per query row), and only logsumexp per query row is saved, so no T x T
// matrix is ever in device memory, forward or backward.
//
// This is the correctness-first version: plain fp32 FMAs on CUDA cores, no tensor cores, no
// pipelining. bf16/f16 inputs with head dim 64 or 128 and Tq == Tk take the tensor-core kernels of
// attention_mma.cu instead (which reuse attn_bwd_delta below); this file covers every other case
// and is their reference in bench/attention_check.cu. Inputs of any float dtype (bf16, f16, f32) are widened to fp32 as tiles are loaded.
// Head dims up to 128 are supported by two instantiations (D_MAX 64 and 128; the host picks the
// smaller that fits); q/k may have a different width from v, and Tk may differ from Tq.
// The causal mask is aligned top-left (key j is visible to query i when j <= i), as in the CPU
// reference.
//
// Thread layout, shared by all three kernels (128 threads = 4 warps, 32x32 tiles):
// - score tiles: thread t owns row t/4 and columns (t%4) + 4k, k < 8;
// - [rows, D] accumulators: thread t owns row t/4 and dims (t%4) + 4k, k < D_MAX/4.
// The four threads of a row are adjacent lanes of one warp, so row max/sum are two shuffles.
// Shared tiles are padded by one float per row so the column walks above hit 32 distinct banks.
//
// Backward follows FlashAttention-2: delta_i = rowsum(dO_i * O_i) first; then dK/dV with one block
// per key tile looping over query tiles, and dQ with one block per query tile looping over key
// tiles. dQ gets its own pass (recomputing P) instead of atomics so gradients are deterministic.
#include "common.cuh"

#define BM 32
#define BN 32
#define NTHREADS 128

#ifndef FULGUR_ATTN_TENSOR
#define FULGUR_ATTN_TENSOR
// One [B, H, T, D] operand: device pointer, element strides of b, h, t (d is contiguous) and dtype.
// Layout must match src/ops/attention.ts (40 bytes). Shared with attention_mma.cu (the guard lets
// bench/attention_check.cu include both files in one translation unit).
struct AttnTensor {
  u64 ptr;
  i64 sb, sh, st;
  int dt;
  int pad;
};

__device__ __forceinline__ i64 row_off(const AttnTensor& t, i64 b, i64 h, i64 i) { return b * t.sb + h * t.sh + i * t.st; }
#endif

// Copies rows [t0, t0 + rows_in_tile) of (b, h) into a padded [32][ld] fp32 tile, zero-filling
// rows past `limit` and dims past `width`.
template <int D_MAX>
__device__ __forceinline__ void load_tile(float* tile, const AttnTensor& t, i64 b, i64 h, i64 t0, i64 limit, int width) {
  const int ld = D_MAX + 1;
  for (int idx = threadIdx.x; idx < 32 * D_MAX; idx += NTHREADS) {
    int r = idx / D_MAX, d = idx - r * D_MAX;
    float v = 0.0f;
    if (t0 + r < limit && d < width) v = load_f((const void*)t.ptr, t.dt, row_off(t, b, h, t0 + r) + d);
    tile[r * ld + d] = v;
  }
}

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

template <int D_MAX>
__device__ void attn_fwd(AttnTensor q, AttnTensor k, AttnTensor v, AttnTensor o, AttnTensor lse, int H, i64 Tq, i64 Tk,
                         int D, int Dv, int causal, float scale) {
  extern __shared__ float smem[];
  const int ld = D_MAX + 1, lp = BN + 1, NA = D_MAX / 4;
  float* Qs = smem;
  float* Ks = Qs + BM * ld;
  float* Vs = Ks + BN * ld;
  float* Ps = Vs + BN * ld;
  const int bh = blockIdx.y;
  const i64 b = bh / H, h = bh % H, q0 = (i64)blockIdx.x * BM;
  const int tid = threadIdx.x, r = tid >> 2, cg = tid & 3;
  const i64 qi = q0 + r;

  load_tile<D_MAX>(Qs, q, b, h, q0, Tq, D);
  float m = -f_inf(), l = 0.0f, acc[NA];
#pragma unroll
  for (int a = 0; a < NA; a++) acc[a] = 0.0f;

  const i64 kEnd = causal ? (q0 + BM < Tk ? q0 + BM : Tk) : Tk;
  for (i64 k0 = 0; k0 < kEnd; k0 += BN) {
    __syncthreads();  // the previous tile's K, V and P are no longer read
    load_tile<D_MAX>(Ks, k, b, h, k0, Tk, D);
    load_tile<D_MAX>(Vs, v, b, h, k0, Tk, Dv);
    __syncthreads();
    float s[8];
#pragma unroll
    for (int c = 0; c < 8; c++) s[c] = 0.0f;
    for (int d = 0; d < D; d++) {
      float qv = Qs[r * ld + d];
#pragma unroll
      for (int c = 0; c < 8; c++) s[c] += qv * Ks[(cg + 4 * c) * ld + d];
    }
    float mt = -f_inf();
#pragma unroll
    for (int c = 0; c < 8; c++) {
      i64 j = k0 + cg + 4 * c;
      bool visible = j < Tk && (!causal || j <= qi);
      s[c] = visible ? s[c] * scale : -f_inf();
      mt = fmaxf(mt, s[c]);
    }
    mt = quad_max(mt);
    float mNew = fmaxf(m, mt);
    // A row that has seen no visible key yet keeps m = -inf; guard the exponentials against inf - inf.
    float alpha = m == -f_inf() ? 0.0f : expf(m - mNew);
    float rs = 0.0f;
#pragma unroll
    for (int c = 0; c < 8; c++) {
      float p = s[c] == -f_inf() ? 0.0f : expf(s[c] - mNew);
      Ps[r * lp + cg + 4 * c] = p;
      rs += p;
    }
    l = l * alpha + quad_sum(rs);
    m = mNew;
#pragma unroll
    for (int a = 0; a < NA; a++) acc[a] *= alpha;
    __syncthreads();
    for (int c = 0; c < BN; c++) {
      float p = Ps[r * lp + c];
#pragma unroll
      for (int a = 0; a < NA; a++) acc[a] += p * Vs[c * ld + cg + 4 * a];
    }
  }
  if (qi < Tq) {
    float inv = 1.0f / l;
    i64 ob = row_off(o, b, h, qi);
#pragma unroll
    for (int a = 0; a < NA; a++) {
      int d = cg + 4 * a;
      if (d < Dv) store_f((void*)o.ptr, o.dt, ob + d, acc[a] * inv);
    }
    if (cg == 0) store_f((void*)lse.ptr, lse.dt, row_off(lse, b, h, qi), m + logf(l));
  }
}

extern "C" __global__ void __launch_bounds__(NTHREADS, 2) attn_fwd_d64(AttnTensor q, AttnTensor k, AttnTensor v,
                                                                     AttnTensor o, AttnTensor lse, int H, i64 Tq,
                                                                     i64 Tk, int D, int Dv, int causal, float scale) {
  attn_fwd<64>(q, k, v, o, lse, H, Tq, Tk, D, Dv, causal, scale);
}

extern "C" __global__ void __launch_bounds__(NTHREADS, 2) attn_fwd_d128(AttnTensor q, AttnTensor k, AttnTensor v,
                                                                      AttnTensor o, AttnTensor lse, int H, i64 Tq,
                                                                      i64 Tk, int D, int Dv, int causal, float scale) {
  attn_fwd<128>(q, k, v, o, lse, H, Tq, Tk, D, Dv, causal, scale);
}

// delta[(b * H + h) * Tq + i] = sum_d dO[b, h, i, d] * O[b, h, i, d]: one warp per query row,
// rows = B * H * Tq.
extern "C" __global__ void attn_bwd_delta(AttnTensor o, AttnTensor dO, float* delta, int H, i64 Tq, int Dv, i64 rows) {
  const int lane = threadIdx.x & 31;
  const i64 warps = ((i64)gridDim.x * blockDim.x) >> 5;
  for (i64 row = (((i64)blockIdx.x * blockDim.x) >> 5) + (threadIdx.x >> 5); row < rows; row += warps) {
    i64 bh = row / Tq, i = row - bh * Tq, b = bh / H, h = bh - b * H;
    i64 oo = row_off(o, b, h, i), go = row_off(dO, b, h, i);
    float s = 0.0f;
    for (int d = lane; d < Dv; d += 32)
      s += load_f((const void*)o.ptr, o.dt, oo + d) * load_f((const void*)dO.ptr, dO.dt, go + d);
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) delta[row] = s;
  }
}

// Scores of query row r against key columns cg + 4c of the tiles in shared memory: P (probabilities
// from the saved lse) and dS = P * (dO . V - delta). Masked entries get 0 in both.
template <int D_MAX>
__device__ __forceinline__ void probs_and_dscores(const float* Qs, const float* dOs, const float* Ks, const float* Vs,
                                                  float lseRow, float deltaRow, i64 qi, i64 k0, i64 Tq, i64 Tk, int D,
                                                  int Dv, int causal, float scale, float p[8], float ds[8]) {
  const int ld = D_MAX + 1, r = threadIdx.x >> 2, cg = threadIdx.x & 3;
  float s[8], dp[8];
#pragma unroll
  for (int c = 0; c < 8; c++) {
    s[c] = 0.0f;
    dp[c] = 0.0f;
  }
  for (int d = 0; d < D; d++) {
    float qv = Qs[r * ld + d];
#pragma unroll
    for (int c = 0; c < 8; c++) s[c] += qv * Ks[(cg + 4 * c) * ld + d];
  }
  for (int d = 0; d < Dv; d++) {
    float gv = dOs[r * ld + d];
#pragma unroll
    for (int c = 0; c < 8; c++) dp[c] += gv * Vs[(cg + 4 * c) * ld + d];
  }
#pragma unroll
  for (int c = 0; c < 8; c++) {
    i64 j = k0 + cg + 4 * c;
    bool visible = qi < Tq && j < Tk && (!causal || j <= qi);
    p[c] = visible ? expf(s[c] * scale - lseRow) : 0.0f;
    ds[c] = p[c] * (dp[c] - deltaRow);
  }
}

template <int D_MAX>
__device__ void attn_bwd_dkdv(AttnTensor q, AttnTensor k, AttnTensor v, AttnTensor dO, AttnTensor lse,
                              const float* delta, AttnTensor dk, AttnTensor dv, int H, i64 Tq, i64 Tk, int D, int Dv,
                              int causal, float scale) {
  extern __shared__ float smem[];
  const int ld = D_MAX + 1, lp = BN + 1, NA = D_MAX / 4;
  float* Ks = smem;
  float* Vs = Ks + BN * ld;
  float* Qs = Vs + BN * ld;
  float* dOs = Qs + BM * ld;
  float* Ps = dOs + BM * ld;
  float* dSs = Ps + BM * lp;
  float* lseS = dSs + BM * lp;
  float* deltaS = lseS + BM;
  const int bh = blockIdx.y;
  const i64 b = bh / H, h = bh % H, k0 = (i64)blockIdx.x * BN;
  const int tid = threadIdx.x, r = tid >> 2, cg = tid & 3;

  load_tile<D_MAX>(Ks, k, b, h, k0, Tk, D);
  load_tile<D_MAX>(Vs, v, b, h, k0, Tk, Dv);
  float dK[NA], dV[NA];
#pragma unroll
  for (int a = 0; a < NA; a++) {
    dK[a] = 0.0f;
    dV[a] = 0.0f;
  }
  // With a causal mask, queries before this key tile cannot see it.
  for (i64 q0 = causal ? k0 : 0; q0 < Tq; q0 += BM) {
    __syncthreads();
    load_tile<D_MAX>(Qs, q, b, h, q0, Tq, D);
    load_tile<D_MAX>(dOs, dO, b, h, q0, Tq, Dv);
    if (tid < BM) {
      i64 qi = q0 + tid;
      lseS[tid] = qi < Tq ? load_f((const void*)lse.ptr, lse.dt, row_off(lse, b, h, qi)) : 0.0f;
      deltaS[tid] = qi < Tq ? delta[(i64)bh * Tq + qi] : 0.0f;
    }
    __syncthreads();
    float p[8], ds[8];
    probs_and_dscores<D_MAX>(Qs, dOs, Ks, Vs, lseS[r], deltaS[r], q0 + r, k0, Tq, Tk, D, Dv, causal, scale, p, ds);
#pragma unroll
    for (int c = 0; c < 8; c++) {
      Ps[r * lp + cg + 4 * c] = p[c];
      dSs[r * lp + cg + 4 * c] = ds[c];
    }
    __syncthreads();
    // Now thread t owns key row t/4: dV += P^T dO, dK += dS^T Q.
    for (int i = 0; i < BM; i++) {
      float pv = Ps[i * lp + r], dsv = dSs[i * lp + r];
#pragma unroll
      for (int a = 0; a < NA; a++) {
        dV[a] += pv * dOs[i * ld + cg + 4 * a];
        dK[a] += dsv * Qs[i * ld + cg + 4 * a];
      }
    }
  }
  const i64 kj = k0 + r;
  if (kj < Tk) {
    i64 ko = row_off(dk, b, h, kj), vo = row_off(dv, b, h, kj);
#pragma unroll
    for (int a = 0; a < NA; a++) {
      int d = cg + 4 * a;
      if (d < D) store_f((void*)dk.ptr, dk.dt, ko + d, dK[a] * scale);
      if (d < Dv) store_f((void*)dv.ptr, dv.dt, vo + d, dV[a]);
    }
  }
}

extern "C" __global__ void __launch_bounds__(NTHREADS, 2)
    attn_bwd_dkdv_d64(AttnTensor q, AttnTensor k, AttnTensor v, AttnTensor dO, AttnTensor lse, const float* delta,
                      AttnTensor dk, AttnTensor dv, int H, i64 Tq, i64 Tk, int D, int Dv, int causal, float scale) {
  attn_bwd_dkdv<64>(q, k, v, dO, lse, delta, dk, dv, H, Tq, Tk, D, Dv, causal, scale);
}

extern "C" __global__ void __launch_bounds__(NTHREADS, 2)
    attn_bwd_dkdv_d128(AttnTensor q, AttnTensor k, AttnTensor v, AttnTensor dO, AttnTensor lse, const float* delta,
                       AttnTensor dk, AttnTensor dv, int H, i64 Tq, i64 Tk, int D, int Dv, int causal, float scale) {
  attn_bwd_dkdv<128>(q, k, v, dO, lse, delta, dk, dv, H, Tq, Tk, D, Dv, causal, scale);
}

template <int D_MAX>
__device__ void attn_bwd_dq(AttnTensor q, AttnTensor k, AttnTensor v, AttnTensor dO, AttnTensor lse,
                            const float* delta, AttnTensor dq, int H, i64 Tq, i64 Tk, int D, int Dv, int causal,
                            float scale) {
  extern __shared__ float smem[];
  const int ld = D_MAX + 1, lp = BN + 1, NA = D_MAX / 4;
  float* Qs = smem;
  float* dOs = Qs + BM * ld;
  float* Ks = dOs + BM * ld;
  float* Vs = Ks + BN * ld;
  float* dSs = Vs + BN * ld;
  const int bh = blockIdx.y;
  const i64 b = bh / H, h = bh % H, q0 = (i64)blockIdx.x * BM;
  const int tid = threadIdx.x, r = tid >> 2, cg = tid & 3;
  const i64 qi = q0 + r;

  load_tile<D_MAX>(Qs, q, b, h, q0, Tq, D);
  load_tile<D_MAX>(dOs, dO, b, h, q0, Tq, Dv);
  const float lseRow = qi < Tq ? load_f((const void*)lse.ptr, lse.dt, row_off(lse, b, h, qi)) : 0.0f;
  const float deltaRow = qi < Tq ? delta[(i64)bh * Tq + qi] : 0.0f;
  float dQ[NA];
#pragma unroll
  for (int a = 0; a < NA; a++) dQ[a] = 0.0f;
  const i64 kEnd = causal ? (q0 + BM < Tk ? q0 + BM : Tk) : Tk;
  for (i64 k0 = 0; k0 < kEnd; k0 += BN) {
    __syncthreads();
    load_tile<D_MAX>(Ks, k, b, h, k0, Tk, D);
    load_tile<D_MAX>(Vs, v, b, h, k0, Tk, Dv);
    __syncthreads();
    float p[8], ds[8];
    probs_and_dscores<D_MAX>(Qs, dOs, Ks, Vs, lseRow, deltaRow, qi, k0, Tq, Tk, D, Dv, causal, scale, p, ds);
#pragma unroll
    for (int c = 0; c < 8; c++) dSs[r * lp + cg + 4 * c] = ds[c];
    __syncthreads();
    for (int c = 0; c < BN; c++) {
      float dsv = dSs[r * lp + c];
#pragma unroll
      for (int a = 0; a < NA; a++) dQ[a] += dsv * Ks[c * ld + cg + 4 * a];
    }
  }
  if (qi < Tq) {
    i64 qo = row_off(dq, b, h, qi);
#pragma unroll
    for (int a = 0; a < NA; a++) {
      int d = cg + 4 * a;
      if (d < D) store_f((void*)dq.ptr, dq.dt, qo + d, dQ[a] * scale);
    }
  }
}

extern "C" __global__ void __launch_bounds__(NTHREADS, 2)
    attn_bwd_dq_d64(AttnTensor q, AttnTensor k, AttnTensor v, AttnTensor dO, AttnTensor lse, const float* delta,
                    AttnTensor dq, int H, i64 Tq, i64 Tk, int D, int Dv, int causal, float scale) {
  attn_bwd_dq<64>(q, k, v, dO, lse, delta, dq, H, Tq, Tk, D, Dv, causal, scale);
}

extern "C" __global__ void __launch_bounds__(NTHREADS, 2)
    attn_bwd_dq_d128(AttnTensor q, AttnTensor k, AttnTensor v, AttnTensor dO, AttnTensor lse, const float* delta,
                     AttnTensor dq, int H, i64 Tq, i64 Tk, int D, int Dv, int causal, float scale) {
  attn_bwd_dq<128>(q, k, v, dO, lse, delta, dq, H, Tq, Tk, D, Dv, causal, scale);
}
