// attention_mma.cu: flash attention on tensor cores for bf16/f16 inputs with head dim 64 or 128 and
// Tq == Tk (the GPT's case), forward and backward, with the same contract as attention.cu
// (Backend.attention / attentionBackward): out in the input dtype, lse [B, H, T] float32 in
// natural log of the scaled, masked scores; backward overwrites dq, dk, dv.
//
// Why: attention.cu does every product with fp32 FMAs on CUDA cores; at the 1b GPT's shapes it is
// ~50x slower than PyTorch's SDPA. Here every product is an mma.sync m16n8k16 with 16-bit operands
// and fp32 accumulators (inline PTX: NVRTC has no CUDA headers), operands reach the tensor cores
// through ldmatrix from shared memory, and K/V (forward, dQ) or Q/dO (dK/dV) tiles are
// double-buffered with cp.async so the next tile's copy overlaps this tile's math.
// attention.cu stays the path for everything else (fp32/f64 inputs, other head dims, Tq != Tk) and
// the reference these kernels are checked against (bench/attention_check.cu).
//
// Work split (FlashAttention-2), 4 warps = 128 threads per block, 64x64 tiles:
// - forward:  one block per 64 query rows of one (b, h); warp w owns rows 16w..16w+15; loop over
//             64-key tiles (up to the diagonal tile when causal). Q fragments stay in registers.
// - dK/dV:    one block per 64-key tile; warp w owns keys 16w..16w+15 and computes S^T = K Q^T and
//             dP^T = V dO^T directly, so P^T and dS^T come out in the accumulator layout of the
//             warp's own key rows and feed dV += P^T dO and dK += dS^T Q from registers.
// - dQ:       one block per 64-query tile; warp w owns 16 query rows; dQ += dS K. A separate pass
//             (recomputing P and dP) instead of atomics keeps gradients deterministic.
// - delta = rowsum(dO * O): attn_mma_bwd_delta below (16-byte loads, D / 8 lanes a row), first.
// Causal blocks are issued heaviest first (blockIdx.x reversed for forward and dQ; dK/dV's heaviest
// tile is already key tile 0) so the last wave is made of short blocks.
//
// Fragment layouts (PTX ISA, "mma.m16n8k16", 16-bit types); lane = 4 * g + t (g = lane / 4,
// t = lane % 4):
// - A (16x16, row-major), 4 x b32: a0 = A[g][2t..2t+1], a1 = A[g+8][2t..2t+1],
//   a2 = A[g][2t+8..2t+9], a3 = A[g+8][2t+8..2t+9]; the lower column sits in the low 16 bits.
// - B (16x8, "col"), 2 x b32: b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g].
// - C/D (16x8 fp32), 4 floats: c0, c1 = C[g][2t..2t+1], c2, c3 = C[g+8][2t..2t+1].
// So the C fragments of two adjacent 16x8 accumulators (columns 0-7 and 8-15), rounded to 16 bits
// and packed in pairs, are exactly the A fragment of one 16x16 operand: P = softmax(S) and dS go
// from accumulators to the next product without touching shared memory.
// - ldmatrix.x4: lanes 8i..8i+7 give the row addresses of 8x8 matrix i, and register i receives
//   M_i[g][2t..2t+1] (with .trans: M_i[2t][g], M_i[2t+1][g]).
//   A operand from a row-major [m][k] tile: lane l addresses row (l & 15), column 8 * (l >> 4).
//   B operand when B^T is stored row-major ([n][k], e.g. K for Q K^T): lane l addresses row
//   (l & 7) + 8 * (l >> 4), column 8 * ((l >> 3) & 1); registers 0,1 = (b0, b1) of n-block 0 and
//   2,3 of n-block 1.
//   B operand stored row-major [k][n] (e.g. V for P V), with .trans: lane l addresses row
//   (l & 7) + 8 * ((l >> 3) & 1), column 8 * (l >> 4); same register assignment.
// Shared tiles are 64 rows of D 16-bit values padded to D + 8 (a row is an odd number of 16-byte
// units: 9 or 17), so the 8 row addresses of each ldmatrix matrix hit 8 distinct bank groups.
//
// Masking: key j is visible to query i when j < T and (not causal or j <= i) (top-left aligned, as
// the CPU reference). Rows and keys past T are zero-filled by cp.async (src-size 0), computed,
// masked to -inf (forward) or P = 0 (backward), and never stored. Softmax runs in base 2:
// scores are scaled by scale * log2(e) once, exp2f (ex2.approx, 2 ulp) does the exponentials, and
// lse is converted back to natural log on the way out (and to base 2 on the way in, backward).
//
// Numbered variants: this is variant 1 (FA2 split, 64x64 tiles, 4 warps, mma.sync + ldmatrix +
// cp.async double buffering). Later variants (wgmma on sm_90) should be added beside it and timed
// in bench/attention_check.cu, keeping this one as the baseline. Tried and dropped (2026-12-04,
// H200, BENCHMARKS.md): a forward with two 16-row m-tiles per warp (128-row blocks, 32-key steps
// to fit the registers) ran 0.135 ms against this one's 0.115 at the 1b GPT's shape (fewer blocks
// for the causal imbalance, twice the softmax rescaling); the same for dQ spilled.
//
// Launch contract (mirrored in src/ops/attention.ts, attentionMmaSharedBytes, and in
// bench/attention_check.cu): block FA_THREADS = 128 threads; grid [ceil(T / 64), B * H];
// dynamic shared memory FaCfg<D>::FWD_SMEM, DKDV_SMEM or DQ_SMEM bytes (opt-in above 48 KiB).
// All 16-bit operands need 16-byte aligned base pointers and b/h/t strides that are multiples of 8
// elements (cp.async moves 16 bytes; outputs are stored as pairs); the host stages any that are not.
#include "common.cuh"

#define FA_BM 64
#define FA_BN 64
#define FA_THREADS 128
#define FA_PAD 8

#ifndef FULGUR_ATTN_TENSOR
#define FULGUR_ATTN_TENSOR
// One [B, H, T, D] operand: device pointer, element strides of b, h, t (d is contiguous) and dtype.
// Layout must match src/ops/attention.ts (40 bytes). Shared with attention.cu.
struct AttnTensor {
  u64 ptr;
  i64 sb, sh, st;
  int dt;
  int pad;
};

__device__ __forceinline__ i64 row_off(const AttnTensor& t, i64 b, i64 h, i64 i) { return b * t.sb + h * t.sh + i * t.st; }
#endif

// Shared-memory carving per head dim, in bytes. A tile is 64 rows x (D + FA_PAD) 16-bit values.
template <int D>
struct FaCfg {
  static constexpr int LD = D + FA_PAD;
  static constexpr int TILE = FA_BN * LD;
  static constexpr int TILE_BYTES = TILE * 2;
  // Q, K[2], V[2]
  static constexpr int FWD_SMEM = 5 * TILE_BYTES;
  // K, V, Q[2], dO[2], then lse (base 2) [2][64] and delta [2][64] as floats
  static constexpr int DKDV_SMEM = 6 * TILE_BYTES + 4 * FA_BM * 4;
  // Q, dO, K[2], V[2]
  static constexpr int DQ_SMEM = 6 * TILE_BYTES;
};

#define FA_LOG2E 1.4426950408889634f
#define FA_LN2 0.6931471805599453f

__device__ __forceinline__ u32 fa_smem_addr(const void* p) {
  u32 a;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
  return a;
}

__device__ __forceinline__ void fa_cp_async16(u32 dst, const void* src, int bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes) : "memory");
}
__device__ __forceinline__ void fa_cp_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void fa_cp_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void fa_ldm_x4(u32 r[4], u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void fa_ldm_x4_t(u32 r[4], u32 addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// c += a * b for one m16n8k16 step; F16 picks the float16 instruction, otherwise bfloat16.
template <bool F16>
__device__ __forceinline__ void fa_mma(float c[4], const u32 a[4], u32 b0, u32 b1) {
  if (F16) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Two floats rounded (to nearest even) to the 16-bit type and packed, lo in the low half. cvt's
// first source goes to the upper half.
template <bool F16>
__device__ __forceinline__ u32 fa_pack(float lo, float hi) {
  u32 r;
  if (F16) asm("cvt.rn.f16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  else asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}

// The 16x16 A fragment made of accumulator tiles 2kk and 2kk + 1 (columns 16kk..16kk + 15),
// rounded to 16 bits: P or dS goes from one product's accumulators into the next (see the header).
template <bool F16, int N>
__device__ __forceinline__ void fa_pack_a(u32 (&a)[4], const float (&c)[N][4], int kk) {
  a[0] = fa_pack<F16>(c[2 * kk][0], c[2 * kk][1]);
  a[1] = fa_pack<F16>(c[2 * kk][2], c[2 * kk][3]);
  a[2] = fa_pack<F16>(c[2 * kk + 1][0], c[2 * kk + 1][1]);
  a[3] = fa_pack<F16>(c[2 * kk + 1][2], c[2 * kk + 1][3]);
}

// acc += A (16x16) B, B the 16 x D rows starting at shared address `rows`, stored row-major and
// read with ldmatrix.trans at this lane's offset offBt.
template <int D, bool F16>
__device__ __forceinline__ void fa_mma_rows_t(float (&acc)[D / 8][4], const u32 (&a)[4], u32 rows, int offBt) {
#pragma unroll
  for (int d2 = 0; d2 < D / 16; d2++) {
    u32 bf[4];
    fa_ldm_x4_t(bf, rows + (u32)(offBt + d2 * 16) * 2u);
    fa_mma<F16>(acc[2 * d2], a, bf[0], bf[1]);
    fa_mma<F16>(acc[2 * d2 + 1], a, bf[2], bf[3]);
  }
}

// This lane's ldmatrix offsets (elements) inside a tile of row pitch LD, see the header: A
// row-major; B stored transposed (B^T row-major); B row-major, read with .trans.
template <int LD>
struct FaLane {
  int a, b, bt;
  __device__ __forceinline__ explicit FaLane(int lane)
      : a((lane & 15) * LD + 8 * (lane >> 4)),
        b(((lane & 7) + 8 * (lane >> 4)) * LD + 8 * ((lane >> 3) & 1)),
        bt(((lane & 7) + 8 * ((lane >> 3) & 1)) * LD + 8 * (lane >> 4)) {}
};

// The query tile a forward or dQ block owns: (b, h) from blockIdx.y, 64 query rows from blockIdx.x
// reversed (heaviest causal tiles first), the key tiles it visits (up to the diagonal when causal)
// and this lane's two query rows.
struct FaQueryTile {
  int bh, q0, nTiles, row0, row1;
  i64 b, h;
  __device__ __forceinline__ FaQueryTile(int H, int T, int causal, int warp, int g) {
    bh = blockIdx.y;
    b = bh / H;
    h = bh % H;
    q0 = (gridDim.x - 1 - blockIdx.x) * FA_BM;
    const int kEnd = causal && q0 + FA_BM < T ? q0 + FA_BM : T;
    nTiles = (kEnd + FA_BN - 1) / FA_BN;
    row0 = q0 + warp * 16 + g;
    row1 = row0 + 8;
  }
};

// Queues the copy of rows [t0, t0 + 64) of (b, h) into a padded tile; rows at or past T are
// zero-filled (src-size 0, reading nothing; the address is clamped to row t0, which exists).
template <int D>
__device__ __forceinline__ void fa_load_tile(u16* tile, const AttnTensor& t, i64 b, i64 h, int t0, int T) {
  constexpr int CPR = D / 8;  // 16-byte chunks per row
  const u16* base = (const u16*)t.ptr;
  const u32 s0 = fa_smem_addr(tile);
#pragma unroll
  for (int it = 0; it < FA_BN * CPR / FA_THREADS; it++) {
    const int idx = threadIdx.x + it * FA_THREADS;
    const int r = idx / CPR, c = idx % CPR;
    const bool ok = t0 + r < T;
    const u16* src = base + row_off(t, b, h, ok ? t0 + r : t0) + c * 8;
    fa_cp_async16(s0 + (u32)(r * FaCfg<D>::LD + c * 8) * 2u, src, ok ? 16 : 0);
  }
}

__device__ __forceinline__ float fa_quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float fa_quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Stores a pair of accumulators (scaled) as two adjacent 16-bit values.
template <bool F16>
__device__ __forceinline__ void fa_store2(const AttnTensor& t, i64 off, float x, float y) {
  *(u32*)((u16*)t.ptr + off) = fa_pack<F16>(x, y);
}

// ---------------------------------------------------------------------------------------------
// Forward

template <int D, bool F16>
__device__ __forceinline__ void fa_fwd(AttnTensor q, AttnTensor k, AttnTensor v, AttnTensor o, AttnTensor lse, int H,
                                       int T, int causal, float scale) {
  typedef FaCfg<D> C;
  extern __shared__ __align__(16) u16 fa_smem[];
  u16* Qs = fa_smem;
  u16* Ks = Qs + C::TILE;      // [2] tiles
  u16* Vs = Ks + 2 * C::TILE;  // [2] tiles
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;
  const FaQueryTile qt(H, T, causal, warp, g);
  const int q0 = qt.q0, nTiles = qt.nTiles, row0 = qt.row0, row1 = qt.row1;
  const i64 b = qt.b, h = qt.h;
  const float sl2 = scale * FA_LOG2E;

  fa_load_tile<D>(Qs, q, b, h, q0, T);
  fa_load_tile<D>(Ks, k, b, h, 0, T);
  fa_load_tile<D>(Vs, v, b, h, 0, T);
  fa_cp_commit();

  const FaLane<C::LD> lane_off(lane);
  const int offA = lane_off.a, offB = lane_off.b, offBt = lane_off.bt;
  const u32 sQ = fa_smem_addr(Qs), sK = fa_smem_addr(Ks), sV = fa_smem_addr(Vs);

  u32 qf[D / 16][4];
  float acc[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; i++) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.0f;
  float m0 = -f_inf(), m1 = -f_inf(), l0 = 0.0f, l1 = 0.0f;

  for (int it = 0; it < nTiles; it++) {
    const int buf = it & 1;
    if (it + 1 < nTiles) {
      fa_load_tile<D>(Ks + (buf ^ 1) * C::TILE, k, b, h, (it + 1) * FA_BN, T);
      fa_load_tile<D>(Vs + (buf ^ 1) * C::TILE, v, b, h, (it + 1) * FA_BN, T);
      fa_cp_commit();
      fa_cp_wait<1>();
    } else {
      fa_cp_wait<0>();
    }
    __syncthreads();
    if (it == 0) {
#pragma unroll
      for (int kk = 0; kk < D / 16; kk++) fa_ldm_x4(qf[kk], sQ + (u32)((warp * 16) * C::LD + offA + kk * 16) * 2u);
    }
    const u32 kb = sK + (u32)(buf * C::TILE) * 2u, vb = sV + (u32)(buf * C::TILE) * 2u;

    // S = Q K^T, 16 rows x 64 keys per warp.
    float s[8][4];
#pragma unroll
    for (int n = 0; n < 8; n++) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
#pragma unroll
      for (int n2 = 0; n2 < 4; n2++) {
        u32 bf[4];
        fa_ldm_x4(bf, kb + (u32)(n2 * 16 * C::LD + offB + kk * 16) * 2u);
        fa_mma<F16>(s[2 * n2], qf[kk], bf[0], bf[1]);
        fa_mma<F16>(s[2 * n2 + 1], qf[kk], bf[2], bf[3]);
      }
    }

    // Scale to base 2, mask, online softmax.
    const int k0 = it * FA_BN;
    const bool needMask = k0 + FA_BN > T || (causal && k0 + FA_BN - 1 > q0);
    float mt0 = -f_inf(), mt1 = -f_inf();
#pragma unroll
    for (int n = 0; n < 8; n++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        float x = s[n][e] * sl2;
        if (needMask) {
          const int j = k0 + n * 8 + 2 * t4 + (e & 1), i = e < 2 ? row0 : row1;
          if (!(j < T && (!causal || j <= i))) x = -f_inf();
        }
        s[n][e] = x;
      }
      mt0 = fmaxf(mt0, fmaxf(s[n][0], s[n][1]));
      mt1 = fmaxf(mt1, fmaxf(s[n][2], s[n][3]));
    }
    mt0 = fa_quad_max(mt0);
    mt1 = fa_quad_max(mt1);
    const float mn0 = fmaxf(m0, mt0), mn1 = fmaxf(m1, mt1);
    // A row with no visible key so far keeps m = -inf; subtract 0 instead so nothing is inf - inf.
    const float mu0 = mn0 == -f_inf() ? 0.0f : mn0, mu1 = mn1 == -f_inf() ? 0.0f : mn1;
    const float al0 = exp2f(m0 - mu0), al1 = exp2f(m1 - mu1);
    m0 = mn0;
    m1 = mn1;
    float rs0 = 0.0f, rs1 = 0.0f;
#pragma unroll
    for (int n = 0; n < 8; n++) {
      s[n][0] = exp2f(s[n][0] - mu0);
      s[n][1] = exp2f(s[n][1] - mu0);
      s[n][2] = exp2f(s[n][2] - mu1);
      s[n][3] = exp2f(s[n][3] - mu1);
      rs0 += s[n][0] + s[n][1];
      rs1 += s[n][2] + s[n][3];
    }
    // l stays a per-lane partial sum (alpha is the same across the quad); reduced once at the end.
    l0 = l0 * al0 + rs0;
    l1 = l1 * al1 + rs1;
#pragma unroll
    for (int d = 0; d < D / 8; d++) {
      acc[d][0] *= al0;
      acc[d][1] *= al0;
      acc[d][2] *= al1;
      acc[d][3] *= al1;
    }

    // O += P V, P straight from the S accumulators (see the header).
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
      u32 a[4];
      fa_pack_a<F16>(a, s, kk);
      fa_mma_rows_t<D, F16>(acc, a, vb + (u32)(kk * 16 * C::LD) * 2u, offBt);
    }
    __syncthreads();  // this buffer is refilled by the next-but-one iteration's copy
  }

  l0 = fa_quad_sum(l0);
  l1 = fa_quad_sum(l1);
  const float inv0 = 1.0f / l0, inv1 = 1.0f / l1;
  if (row0 < T) {
    const i64 ob = row_off(o, b, h, row0) + 2 * t4;
#pragma unroll
    for (int d = 0; d < D / 8; d++) fa_store2<F16>(o, ob + d * 8, acc[d][0] * inv0, acc[d][1] * inv0);
    if (t4 == 0) store_f((void*)lse.ptr, lse.dt, row_off(lse, b, h, row0), m0 * FA_LN2 + logf(l0));
  }
  if (row1 < T) {
    const i64 ob = row_off(o, b, h, row1) + 2 * t4;
#pragma unroll
    for (int d = 0; d < D / 8; d++) fa_store2<F16>(o, ob + d * 8, acc[d][2] * inv1, acc[d][3] * inv1);
    if (t4 == 0) store_f((void*)lse.ptr, lse.dt, row_off(lse, b, h, row1), m1 * FA_LN2 + logf(l1));
  }
}

#define FA_FWD(NAME, D, F16)                                                                                     \
  extern "C" __global__ void __launch_bounds__(FA_THREADS, 2)                                                    \
      NAME(AttnTensor q, AttnTensor k, AttnTensor v, AttnTensor o, AttnTensor lse, int H, i64 T, int causal,     \
           float scale) {                                                                                        \
    fa_fwd<D, F16>(q, k, v, o, lse, H, (int)T, causal, scale);                                                   \
  }
FA_FWD(attn_mma_fwd_bf16_d64, 64, false)
FA_FWD(attn_mma_fwd_bf16_d128, 128, false)
FA_FWD(attn_mma_fwd_f16_d64, 64, true)
FA_FWD(attn_mma_fwd_f16_d128, 128, true)

// ---------------------------------------------------------------------------------------------
// Backward: dK and dV, one block per 64-key tile.

template <int D, bool F16>
__device__ __forceinline__ void fa_bwd_dkdv(AttnTensor q, AttnTensor k, AttnTensor v, AttnTensor dO, AttnTensor lse,
                                            const float* delta, AttnTensor dk, AttnTensor dv, int H, int T, int causal,
                                            float scale) {
  typedef FaCfg<D> C;
  constexpr int QS = 32;
  extern __shared__ __align__(16) u16 fa_smem[];
  u16* Ks = fa_smem;
  u16* Vs = Ks + C::TILE;
  u16* Qs = Vs + C::TILE;       // [2] tiles
  u16* dOs = Qs + 2 * C::TILE;  // [2] tiles
  float* lseS = (float*)(dOs + 2 * C::TILE);  // [2][64], base 2
  float* deltaS = lseS + 2 * FA_BM;           // [2][64]
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t4 = lane & 3;
  const int bh = blockIdx.y;
  const i64 b = bh / H, h = bh % H;
  const int k0 = blockIdx.x * FA_BN;
  // With a causal mask, query tiles before this key tile cannot see it.
  const int qStart = causal ? k0 : 0;
  const int nTiles = (T - qStart + FA_BM - 1) / FA_BM;
  const int j0 = k0 + warp * 16 + g, j1 = j0 + 8;
  const float sl2 = scale * FA_LOG2E;
  const float* deltaRow = delta + (i64)bh * T;

  // lse (to base 2) and delta of query tile q0 into slot `buf`; plain loads, published by the
  // __syncthreads that precedes their use.
  auto loadRowStats = [&](int buf, int q0) {
    if (tid < FA_BM) {
      const int i = q0 + tid;
      lseS[buf * FA_BM + tid] = i < T ? load_f((const void*)lse.ptr, lse.dt, row_off(lse, b, h, i)) * FA_LOG2E : 0.0f;
    } else {
      const int i = q0 + tid - FA_BM;
      deltaS[buf * FA_BM + tid - FA_BM] = i < T ? deltaRow[i] : 0.0f;
    }
  };

  fa_load_tile<D>(Ks, k, b, h, k0, T);
  fa_load_tile<D>(Vs, v, b, h, k0, T);
  fa_load_tile<D>(Qs, q, b, h, qStart, T);
  fa_load_tile<D>(dOs, dO, b, h, qStart, T);
  fa_cp_commit();
  loadRowStats(0, qStart);

  const FaLane<C::LD> lane_off(lane);
  const int offA = lane_off.a, offB = lane_off.b, offBt = lane_off.bt;
  const u32 sK = fa_smem_addr(Ks) + (u32)(warp * 16 * C::LD + offA) * 2u;
  const u32 sV = fa_smem_addr(Vs) + (u32)(warp * 16 * C::LD + offA) * 2u;
  const u32 sQ = fa_smem_addr(Qs), sdO = fa_smem_addr(dOs);

  float dK[D / 8][4], dV[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; i++) {
    dK[i][0] = dK[i][1] = dK[i][2] = dK[i][3] = 0.0f;
    dV[i][0] = dV[i][1] = dV[i][2] = dV[i][3] = 0.0f;
  }

  for (int it = 0; it < nTiles; it++) {
    const int buf = it & 1, q0 = qStart + it * FA_BM;
    if (it + 1 < nTiles) {
      fa_load_tile<D>(Qs + (buf ^ 1) * C::TILE, q, b, h, q0 + FA_BM, T);
      fa_load_tile<D>(dOs + (buf ^ 1) * C::TILE, dO, b, h, q0 + FA_BM, T);
      fa_cp_commit();
      loadRowStats(buf ^ 1, q0 + FA_BM);
      fa_cp_wait<1>();
    } else {
      fa_cp_wait<0>();
    }
    __syncthreads();
    const u32 qb = sQ + (u32)(buf * C::TILE) * 2u, dob = sdO + (u32)(buf * C::TILE) * 2u;
    const float* lseT = lseS + buf * FA_BM;
    const float* deltaT = deltaS + buf * FA_BM;

    const bool needMask = q0 + FA_BM > T || k0 + FA_BN > T || (causal && q0 < k0 + FA_BN - 1);
    // The 64 queries go in slices of QS = 32 so S^T, dP^T and the dK, dV accumulators fit in
    // registers together. (Slices of 16 at D = 128, once needed against spills, ran this kernel
    // 12% slower on an H200: each K or V fragment fed half the products. CUDA 13's ptxas fits 32.)
#pragma unroll 1
    for (int qs = 0; qs < FA_BM; qs += QS) {
      // S^T = K Q^T and dP^T = V dO^T: 16 keys x QS queries per warp.
      float st[QS / 8][4], dpt[QS / 8][4];
#pragma unroll
      for (int n = 0; n < QS / 8; n++) {
        st[n][0] = st[n][1] = st[n][2] = st[n][3] = 0.0f;
        dpt[n][0] = dpt[n][1] = dpt[n][2] = dpt[n][3] = 0.0f;
      }
#pragma unroll
      for (int kk = 0; kk < D / 16; kk++) {
        u32 af[4];
        fa_ldm_x4(af, sK + kk * 32);
#pragma unroll
        for (int n2 = 0; n2 < QS / 16; n2++) {
          u32 bf[4];
          fa_ldm_x4(bf, qb + (u32)((qs + n2 * 16) * C::LD + offB + kk * 16) * 2u);
          fa_mma<F16>(st[2 * n2], af, bf[0], bf[1]);
          fa_mma<F16>(st[2 * n2 + 1], af, bf[2], bf[3]);
        }
        fa_ldm_x4(af, sV + kk * 32);
#pragma unroll
        for (int n2 = 0; n2 < QS / 16; n2++) {
          u32 bf[4];
          fa_ldm_x4(bf, dob + (u32)((qs + n2 * 16) * C::LD + offB + kk * 16) * 2u);
          fa_mma<F16>(dpt[2 * n2], af, bf[0], bf[1]);
          fa_mma<F16>(dpt[2 * n2 + 1], af, bf[2], bf[3]);
        }
      }

      // P^T = exp2(S^T * scale * log2e - lse2) (0 where masked), dS^T = P^T (dP^T - delta).
#pragma unroll
      for (int n = 0; n < QS / 8; n++) {
#pragma unroll
        for (int e = 0; e < 4; e++) {
          const int c = qs + n * 8 + 2 * t4 + (e & 1);  // query column inside the tile
          float p = exp2f(st[n][e] * sl2 - lseT[c]);
          if (needMask) {
            const int i = q0 + c, j = e < 2 ? j0 : j1;
            if (!(i < T && j < T && (!causal || j <= i))) p = 0.0f;
          }
          st[n][e] = p;
          dpt[n][e] = p * (dpt[n][e] - deltaT[c]);
        }
      }

      // dV += P^T dO and dK += dS^T Q; the query index is the reduction dim.
#pragma unroll
      for (int kk = 0; kk < QS / 16; kk++) {
        u32 pa[4], da[4];
        fa_pack_a<F16>(pa, st, kk);
        fa_pack_a<F16>(da, dpt, kk);
        // dV's and dK's products interleaved per column block: the order the scheduler does best with.
#pragma unroll
        for (int d2 = 0; d2 < D / 16; d2++) {
          const u32 at = (u32)((qs + kk * 16) * C::LD + offBt + d2 * 16) * 2u;
          u32 bf[4];
          fa_ldm_x4_t(bf, dob + at);
          fa_mma<F16>(dV[2 * d2], pa, bf[0], bf[1]);
          fa_mma<F16>(dV[2 * d2 + 1], pa, bf[2], bf[3]);
          fa_ldm_x4_t(bf, qb + at);
          fa_mma<F16>(dK[2 * d2], da, bf[0], bf[1]);
          fa_mma<F16>(dK[2 * d2 + 1], da, bf[2], bf[3]);
        }
      }
    }
    __syncthreads();  // this buffer (tiles and row stats) is refilled by the next iteration's copy
  }

  if (j0 < T) {
    const i64 ko = row_off(dk, b, h, j0) + 2 * t4, vo = row_off(dv, b, h, j0) + 2 * t4;
#pragma unroll
    for (int d = 0; d < D / 8; d++) {
      fa_store2<F16>(dk, ko + d * 8, dK[d][0] * scale, dK[d][1] * scale);
      fa_store2<F16>(dv, vo + d * 8, dV[d][0], dV[d][1]);
    }
  }
  if (j1 < T) {
    const i64 ko = row_off(dk, b, h, j1) + 2 * t4, vo = row_off(dv, b, h, j1) + 2 * t4;
#pragma unroll
    for (int d = 0; d < D / 8; d++) {
      fa_store2<F16>(dk, ko + d * 8, dK[d][2] * scale, dK[d][3] * scale);
      fa_store2<F16>(dv, vo + d * 8, dV[d][2], dV[d][3]);
    }
  }
}

#define FA_DKDV(NAME, D, F16)                                                                                    \
  extern "C" __global__ void __launch_bounds__(FA_THREADS, 2)                                                    \
      NAME(AttnTensor q, AttnTensor k, AttnTensor v, AttnTensor dO, AttnTensor lse, const float* delta,          \
           AttnTensor dk, AttnTensor dv, int H, i64 T, int causal, float scale) {                                \
    fa_bwd_dkdv<D, F16>(q, k, v, dO, lse, delta, dk, dv, H, (int)T, causal, scale);                             \
  }
FA_DKDV(attn_mma_bwd_dkdv_bf16_d64, 64, false)
FA_DKDV(attn_mma_bwd_dkdv_bf16_d128, 128, false)
FA_DKDV(attn_mma_bwd_dkdv_f16_d64, 64, true)
FA_DKDV(attn_mma_bwd_dkdv_f16_d128, 128, true)

// ---------------------------------------------------------------------------------------------
// Backward: dQ, one block per 64-query tile.

template <int D, bool F16>
__device__ __forceinline__ void fa_bwd_dq(AttnTensor q, AttnTensor k, AttnTensor v, AttnTensor dO, AttnTensor lse,
                                          const float* delta, AttnTensor dq, int H, int T, int causal, float scale) {
  typedef FaCfg<D> C;
  extern __shared__ __align__(16) u16 fa_smem[];
  u16* Qs = fa_smem;
  u16* dOs = Qs + C::TILE;
  u16* Ks = dOs + C::TILE;     // [2] tiles
  u16* Vs = Ks + 2 * C::TILE;  // [2] tiles
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t4 = lane & 3;
  const FaQueryTile qt(H, T, causal, warp, g);
  const int bh = qt.bh, q0 = qt.q0, nTiles = qt.nTiles, row0 = qt.row0, row1 = qt.row1;
  const i64 b = qt.b, h = qt.h;
  const float sl2 = scale * FA_LOG2E;

  fa_load_tile<D>(Qs, q, b, h, q0, T);
  fa_load_tile<D>(dOs, dO, b, h, q0, T);
  fa_load_tile<D>(Ks, k, b, h, 0, T);
  fa_load_tile<D>(Vs, v, b, h, 0, T);
  fa_cp_commit();
  const float lse0 = row0 < T ? load_f((const void*)lse.ptr, lse.dt, row_off(lse, b, h, row0)) * FA_LOG2E : 0.0f;
  const float lse1 = row1 < T ? load_f((const void*)lse.ptr, lse.dt, row_off(lse, b, h, row1)) * FA_LOG2E : 0.0f;
  const float del0 = row0 < T ? delta[(i64)bh * T + row0] : 0.0f;
  const float del1 = row1 < T ? delta[(i64)bh * T + row1] : 0.0f;

  const FaLane<C::LD> lane_off(lane);
  const int offA = lane_off.a, offB = lane_off.b, offBt = lane_off.bt;
  const u32 sQ = fa_smem_addr(Qs) + (u32)(warp * 16 * C::LD + offA) * 2u;
  const u32 sdO = fa_smem_addr(dOs) + (u32)(warp * 16 * C::LD + offA) * 2u;
  const u32 sK = fa_smem_addr(Ks), sV = fa_smem_addr(Vs);

  float dQ[D / 8][4];
#pragma unroll
  for (int i = 0; i < D / 8; i++) dQ[i][0] = dQ[i][1] = dQ[i][2] = dQ[i][3] = 0.0f;

  for (int it = 0; it < nTiles; it++) {
    const int buf = it & 1, k0 = it * FA_BN;
    if (it + 1 < nTiles) {
      fa_load_tile<D>(Ks + (buf ^ 1) * C::TILE, k, b, h, k0 + FA_BN, T);
      fa_load_tile<D>(Vs + (buf ^ 1) * C::TILE, v, b, h, k0 + FA_BN, T);
      fa_cp_commit();
      fa_cp_wait<1>();
    } else {
      fa_cp_wait<0>();
    }
    __syncthreads();
    const u32 kb = sK + (u32)(buf * C::TILE) * 2u, vb = sV + (u32)(buf * C::TILE) * 2u;

    // S = Q K^T and dP = dO V^T: 16 queries x 64 keys per warp.
    float s[8][4], dp[8][4];
#pragma unroll
    for (int n = 0; n < 8; n++) {
      s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
      dp[n][0] = dp[n][1] = dp[n][2] = dp[n][3] = 0.0f;
    }
#pragma unroll
    for (int kk = 0; kk < D / 16; kk++) {
      u32 af[4];
      fa_ldm_x4(af, sQ + kk * 32);
#pragma unroll
      for (int n2 = 0; n2 < 4; n2++) {
        u32 bf[4];
        fa_ldm_x4(bf, kb + (u32)(n2 * 16 * C::LD + offB + kk * 16) * 2u);
        fa_mma<F16>(s[2 * n2], af, bf[0], bf[1]);
        fa_mma<F16>(s[2 * n2 + 1], af, bf[2], bf[3]);
      }
      fa_ldm_x4(af, sdO + kk * 32);
#pragma unroll
      for (int n2 = 0; n2 < 4; n2++) {
        u32 bf[4];
        fa_ldm_x4(bf, vb + (u32)(n2 * 16 * C::LD + offB + kk * 16) * 2u);
        fa_mma<F16>(dp[2 * n2], af, bf[0], bf[1]);
        fa_mma<F16>(dp[2 * n2 + 1], af, bf[2], bf[3]);
      }
    }

    // dS = P (dP - delta), P = exp2(S * scale * log2e - lse2), 0 where masked.
    const bool needMask = q0 + FA_BM > T || k0 + FA_BN > T || (causal && k0 + FA_BN - 1 > q0);
#pragma unroll
    for (int n = 0; n < 8; n++) {
#pragma unroll
      for (int e = 0; e < 4; e++) {
        const bool lo = e < 2;
        float p = exp2f(s[n][e] * sl2 - (lo ? lse0 : lse1));
        if (needMask) {
          const int j = k0 + n * 8 + 2 * t4 + (e & 1), i = lo ? row0 : row1;
          if (!(i < T && j < T && (!causal || j <= i))) p = 0.0f;
        }
        dp[n][e] = p * (dp[n][e] - (lo ? del0 : del1));
      }
    }

    // dQ += dS K; the key index is the reduction dim.
#pragma unroll
    for (int kk = 0; kk < 4; kk++) {
      u32 a[4];
      fa_pack_a<F16>(a, dp, kk);
      fa_mma_rows_t<D, F16>(dQ, a, kb + (u32)(kk * 16 * C::LD) * 2u, offBt);
    }
    __syncthreads();  // this buffer is refilled by the next iteration's copy
  }

  if (row0 < T) {
    const i64 qo = row_off(dq, b, h, row0) + 2 * t4;
#pragma unroll
    for (int d = 0; d < D / 8; d++) fa_store2<F16>(dq, qo + d * 8, dQ[d][0] * scale, dQ[d][1] * scale);
  }
  if (row1 < T) {
    const i64 qo = row_off(dq, b, h, row1) + 2 * t4;
#pragma unroll
    for (int d = 0; d < D / 8; d++) fa_store2<F16>(dq, qo + d * 8, dQ[d][2] * scale, dQ[d][3] * scale);
  }
}

#define FA_DQ(NAME, D, F16)                                                                                      \
  extern "C" __global__ void __launch_bounds__(FA_THREADS, 2)                                                    \
      NAME(AttnTensor q, AttnTensor k, AttnTensor v, AttnTensor dO, AttnTensor lse, const float* delta,          \
           AttnTensor dq, int H, i64 T, int causal, float scale) {                                               \
    fa_bwd_dq<D, F16>(q, k, v, dO, lse, delta, dq, H, (int)T, causal, scale);                                    \
  }
FA_DQ(attn_mma_bwd_dq_bf16_d64, 64, false)
FA_DQ(attn_mma_bwd_dq_bf16_d128, 128, false)
FA_DQ(attn_mma_bwd_dq_f16_d64, 64, true)
FA_DQ(attn_mma_bwd_dq_f16_d128, 128, true)

// delta[(b * H + h) * T + i] = sum_d dO[b, h, i, d] * O[b, h, i, d] for 16-bit O and dO that meet
// the launch contract above (16-byte aligned rows): D / 8 lanes per row, each reading 8 elements as
// one 16-byte word, so a warp covers 32 / (D / 8) rows per step. attention.cu's attn_bwd_delta
// reads one element per lane through the dtype switch and runs 4x slower at the GPT's shapes.
// Grid-stride over rows = B * H * T; lanes of a row reduce with shuffles inside their group.
template <int D, bool F16>
__device__ __forceinline__ void fa_bwd_delta(const AttnTensor& o, const AttnTensor& dO, float* delta, int H, i64 T, i64 rows) {
  constexpr int LPR = D / 8;           // lanes per row
  constexpr int RPW = 32 / LPR;        // rows per warp step
  const int lane = threadIdx.x & 31, sub = lane / LPR, part = lane % LPR;
  const i64 warp = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
  const i64 warps = ((i64)gridDim.x * blockDim.x) >> 5;
  for (i64 base = warp * RPW; base < rows; base += warps * RPW) {
    const i64 row = base + sub;
    float s = 0.0f;
    if (row < rows) {
      const i64 bh = row / T, i = row - bh * T, b = bh / H, h = bh - b * H;
      const W16 a = *(const W16*)((const u16*)o.ptr + row_off(o, b, h, i) + part * 8);
      const W16 g = *(const W16*)((const u16*)dO.ptr + row_off(dO, b, h, i) + part * 8);
#pragma unroll
      for (int k = 0; k < 4; k++) {
        const u16 alo = (u16)(a.w[k] & 0xffffu), ahi = (u16)(a.w[k] >> 16);
        const u16 glo = (u16)(g.w[k] & 0xffffu), ghi = (u16)(g.w[k] >> 16);
        s += (F16 ? f16_to_f32(alo) : bf16_to_f32(alo)) * (F16 ? f16_to_f32(glo) : bf16_to_f32(glo));
        s += (F16 ? f16_to_f32(ahi) : bf16_to_f32(ahi)) * (F16 ? f16_to_f32(ghi) : bf16_to_f32(ghi));
      }
    }
#pragma unroll
    for (int off = LPR / 2; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (part == 0 && row < rows) delta[row] = s;
  }
}

#define FA_DELTA(NAME, D, F16)                                                                                  \
  extern "C" __global__ void __launch_bounds__(256) NAME(AttnTensor o, AttnTensor dO, float* delta, int H, i64 T, \
                                                         i64 rows) {                                          \
    fa_bwd_delta<D, F16>(o, dO, delta, H, T, rows);                                                             \
  }
FA_DELTA(attn_mma_bwd_delta_bf16_d64, 64, false)
FA_DELTA(attn_mma_bwd_delta_bf16_d128, 128, false)
FA_DELTA(attn_mma_bwd_delta_f16_d64, 64, true)
FA_DELTA(attn_mma_bwd_delta_f16_d128, 128, true)
