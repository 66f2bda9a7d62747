// layernorm.cu: layer norm over the last dim (biased variance), forward and backward
// (Backend.layerNorm and layerNormBackward).
//
// Fast path (float32, bfloat16 and float16 rows: one dtype throughout, or the float32 / 16-bit
// mixes of mixed precision, see LN_VARIANTS): a group of W warps (one warp for rows up to 512
// elements) owns a row and holds it in registers, so x is read from DRAM once: the mean and then the
// squared deviations are summed from registers (two passes: a one-pass E[x^2] - E[x]^2 cancels
// badly on rows with a large mean, as the CPU reference notes), in float32 with a fixed reduction
// tree. The host picks W so each thread holds at most 16 (forward) or 8 (backward: x, g and the two
// column accumulators) elements. Rows that are 16-byte aligned and a multiple of V elements wide
// are read and written V elements at a time (`_vec`), V being 16 bytes of the narrowest row dtype,
// so that one access of each operand covers the same columns: a 16-bit row moves one 16-byte word,
// a float32 row beside it two. Any other row uses the same kernels one element at a time
// (`_scalar`), still coalesced across the warp.
//
// Backward: gx needs two row sums, computed as in the forward. The weight and bias gradients are
// sums over all rows; rather than atomics (whose order, and so whose rounding, changes from run to
// run) the gx kernel's blocks each walk a fixed set of rows (grid-stride, grid sized to one wave)
// and keep per-column sums of gy * xhat and gy in registers, written once per block as float32
// partials; `layernorm_bwd_dwdb_reduce` then adds the partials of each column in a fixed order (in
// float64) and accumulates into gw / gb (which the contract says are added to, not overwritten).
// The same device and shapes always give the same bits.
//
// Generic path (float64 or int32 rows, row dtype mixes without a fast kernel, rows wider than a
// block can hold): one block per row, statistics in float64 (float64 inputs keep float64 accuracy),
// and a separate two-step column reduction for gw / gb.
#include "common.cuh"

extern "C" __global__ void layernorm_fwd(const void* x, int xdt, i64 xRow, const void* w, int wdt, i64 wStride,
                                         const void* b, int bdt, i64 bStride, void* out, int odt, i64 oRow, void* mean,
                                         int mdt, i64 mStride, void* rstd, int rdt, i64 rStride, i64 rows, i64 cols,
                                         float eps) {
  __shared__ double scratch[32];
  for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    i64 xb = r * xRow, ob = r * oRow;
    double s = 0.0;
    for (i64 j = threadIdx.x; j < cols; j += blockDim.x) s += load_d(x, xdt, xb + j);
    double mu = block_sum(s, scratch) / (double)cols;
    double v = 0.0;
    for (i64 j = threadIdx.x; j < cols; j += blockDim.x) {
      double d = load_d(x, xdt, xb + j) - mu;
      v += d * d;
    }
    v = block_sum(v, scratch) / (double)cols;
    double rs = 1.0 / sqrt(v + (double)eps);
    for (i64 j = threadIdx.x; j < cols; j += blockDim.x) {
      double y = (load_d(x, xdt, xb + j) - mu) * rs;
      if (w) y *= load_d(w, wdt, j * wStride);
      if (b) y += load_d(b, bdt, j * bStride);
      store_d(out, odt, ob + j, y);
    }
    if (threadIdx.x == 0) {
      store_d(mean, mdt, r * mStride, mu);
      store_d(rstd, rdt, r * rStride, rs);
    }
    __syncthreads();
  }
}

// gx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = gy * weight, xhat = (x - mean) * rstd;
// with `accumulate`, added to the gradient already in gx (as the fast kernels' LN_GX_ACC).
extern "C" __global__ void layernorm_bwd_dx(const void* gy, int gydt, i64 gyRow, const void* x, int xdt, i64 xRow,
                                            const void* w, int wdt, i64 wStride, const void* mean, int mdt,
                                            i64 mStride, const void* rstd, int rdt, i64 rStride, void* gx, int gxdt,
                                            i64 gxRow, i64 rows, i64 cols, int accumulate) {
  __shared__ double scratch[32];
  for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    i64 gb = r * gyRow, xb = r * xRow, ob = r * gxRow;
    double mu = load_d(mean, mdt, r * mStride), rs = load_d(rstd, rdt, r * rStride);
    double s1 = 0.0, s2 = 0.0;
    for (i64 j = threadIdx.x; j < cols; j += blockDim.x) {
      double g = load_d(gy, gydt, gb + j);
      if (w) g *= load_d(w, wdt, j * wStride);
      double xh = (load_d(x, xdt, xb + j) - mu) * rs;
      s1 += g;
      s2 += g * xh;
    }
    double m1 = block_sum(s1, scratch) / (double)cols;
    double m2 = block_sum(s2, scratch) / (double)cols;
    for (i64 j = threadIdx.x; j < cols; j += blockDim.x) {
      double g = load_d(gy, gydt, gb + j);
      if (w) g *= load_d(w, wdt, j * wStride);
      double xh = (load_d(x, xdt, xb + j) - mu) * rs;
      const double v = rs * (g - m1 - xh * m2);
      store_d(gx, gxdt, ob + j, accumulate ? load_d(gx, gxdt, ob + j) + v : v);
    }
    __syncthreads();
  }
}

// Per-column partial sums of gy * xhat (into pw) and gy (into pb) over the rows of chunk blockIdx.y.
// Either output may be null when that gradient is not wanted. Layout: partial[chunk * cols + j].
extern "C" __global__ void layernorm_bwd_dwdb_partial(const void* gy, int gydt, i64 gyRow, const void* x, int xdt,
                                                      i64 xRow, const void* mean, int mdt, i64 mStride,
                                                      const void* rstd, int rdt, i64 rStride, double* pw, double* pb,
                                                      i64 rows, i64 cols, i64 rowsPerChunk) {
  i64 j = (i64)blockIdx.x * blockDim.x + threadIdx.x;
  if (j >= cols) return;
  i64 r0 = (i64)blockIdx.y * rowsPerChunk;
  i64 r1 = r0 + rowsPerChunk < rows ? r0 + rowsPerChunk : rows;
  double aw = 0.0, ab = 0.0;
  for (i64 r = r0; r < r1; r++) {
    double g = load_d(gy, gydt, r * gyRow + j);
    ab += g;
    if (pw) {
      double xh = (load_d(x, xdt, r * xRow + j) - load_d(mean, mdt, r * mStride)) * load_d(rstd, rdt, r * rStride);
      aw += g * xh;
    }
  }
  if (pw) pw[(i64)blockIdx.y * cols + j] = aw;
  if (pb) pb[(i64)blockIdx.y * cols + j] = ab;
}

// gw[j] += sum over chunks of pw[., j]; gb likewise. Summed in chunk order, so the result is the same every run.
extern "C" __global__ void layernorm_bwd_dwdb_final(const double* pw, const double* pb, i64 chunks, i64 cols, void* gw,
                                                    int gwdt, i64 gwStride, void* gb, int gbdt, i64 gbStride) {
  GRID_LOOP(j, cols) {
    if (gw) {
      double s = 0.0;
      for (i64 c = 0; c < chunks; c++) s += pw[c * cols + (i64)j];
      store_d(gw, gwdt, (i64)j * gwStride, load_d(gw, gwdt, (i64)j * gwStride) + s);
    }
    if (gb) {
      double s = 0.0;
      for (i64 c = 0; c < chunks; c++) s += pb[c * cols + (i64)j];
      store_d(gb, gbdt, (i64)j * gbStride, load_d(gb, gbdt, (i64)j * gbStride) + s);
    }
  }
}

// ---- Fast path -------------------------------------------------------------------------------

// Raw 16/8-byte words for vector loads and stores (no toolkit headers, so no float4/uint4 here).
struct alignas(16) Raw16 {
  u32 a, b, c, d;
};
struct alignas(8) Raw8 {
  u32 a, b;
};

// Storage type of a float dtype: float32 as float, the 16-bit floats as raw words.
template <int DT>
struct StorageOf {
  typedef u16 T;
};
template <>
struct StorageOf<DT_F32> {
  typedef float T;
};
// float64 and int32 only ever appear as weight / bias (read, never vector-loaded).
template <>
struct StorageOf<DT_F64> {
  typedef double T;
};
template <>
struct StorageOf<DT_I32> {
  typedef int T;
};

template <int DT>
__device__ __forceinline__ float widen(typename StorageOf<DT>::T s);
template <>
__device__ __forceinline__ float widen<DT_F32>(float s) {
  return s;
}
template <>
__device__ __forceinline__ float widen<DT_BF16>(u16 s) {
  return bf16_to_f32(s);
}
template <>
__device__ __forceinline__ float widen<DT_F16>(u16 s) {
  return f16_to_f32(s);
}
template <>
__device__ __forceinline__ float widen<DT_F64>(double s) {
  return (float)s;
}
template <>
__device__ __forceinline__ float widen<DT_I32>(int s) {
  return (float)s;
}

template <int DT>
__device__ __forceinline__ typename StorageOf<DT>::T narrow(float f);
template <>
__device__ __forceinline__ float narrow<DT_F32>(float f) {
  return f;
}
template <>
__device__ __forceinline__ u16 narrow<DT_BF16>(float f) {
  return f32_to_bf16(f);
}
template <>
__device__ __forceinline__ u16 narrow<DT_F16>(float f) {
  return f32_to_f16(f);
}

// N consecutive elements of type S at p, in 16-byte (or 8-byte) words when N * sizeof(S) allows;
// the caller guarantees that alignment.
template <typename S, int N>
__device__ __forceinline__ void load_raw(const S* p, S (&r)[N]) {
  constexpr int B = N * (int)sizeof(S);
  if constexpr (B % 16 == 0) {
#pragma unroll
    for (int k = 0; k < B / 16; k++) {
      Raw16 w = ((const Raw16*)p)[k];
      u32 u[4] = {w.a, w.b, w.c, w.d};
#pragma unroll
      for (int q = 0; q < 4; q++) {
        if constexpr (sizeof(S) == 4) r[k * 4 + q] = __uint_as_float(u[q]);
        else {
          r[k * 8 + 2 * q] = (S)(u[q] & 0xffffu);
          r[k * 8 + 2 * q + 1] = (S)(u[q] >> 16);
        }
      }
    }
  } else if constexpr (B == 8 && sizeof(S) == 2) {
    Raw8 w = *(const Raw8*)p;
    r[0] = (S)(w.a & 0xffffu);
    r[1] = (S)(w.a >> 16);
    r[2] = (S)(w.b & 0xffffu);
    r[3] = (S)(w.b >> 16);
  } else {
#pragma unroll
    for (int e = 0; e < N; e++) r[e] = p[e];
  }
}

template <typename S, int N>
__device__ __forceinline__ void store_raw(S* p, const S (&r)[N]) {
  constexpr int B = N * (int)sizeof(S);
  if constexpr (B % 16 == 0) {
#pragma unroll
    for (int k = 0; k < B / 16; k++) {
      u32 u[4];
#pragma unroll
      for (int q = 0; q < 4; q++) {
        if constexpr (sizeof(S) == 4) u[q] = __float_as_uint(r[k * 4 + q]);
        else u[q] = (u32)r[k * 8 + 2 * q] | ((u32)r[k * 8 + 2 * q + 1] << 16);
      }
      Raw16 w;
      w.a = u[0];
      w.b = u[1];
      w.c = u[2];
      w.d = u[3];
      ((Raw16*)p)[k] = w;
    }
  } else {
#pragma unroll
    for (int e = 0; e < N; e++) p[e] = r[e];
  }
}

// N elements of a row of dtype DT starting at element j, widened to float.
template <int DT, int N>
__device__ __forceinline__ void load_row(const void* base, i64 j, float (&out)[N]) {
  typedef typename StorageOf<DT>::T S;
  S r[N];
  load_raw<S, N>((const S*)base + j, r);
#pragma unroll
  for (int e = 0; e < N; e++) out[e] = widen<DT>(r[e]);
}

template <int DT, int N>
__device__ __forceinline__ void store_row(void* base, i64 j, const float (&v)[N]) {
  typedef typename StorageOf<DT>::T S;
  S r[N];
#pragma unroll
  for (int e = 0; e < N; e++) r[e] = narrow<DT>(v[e]);
  store_raw<S, N>((S*)base + j, r);
}

// y[k][.] *= (MUL) or += (!MUL) the weight-like vector p (any dtype and stride) at the thread's
// accesses. The dtype switch sits outside the loop over accesses, so each case is one unrolled run
// of typed loads. `vec` (decided by the host: stride 1, 16-byte aligned base) allows word loads for
// the float dtypes; V is then the row's vector width, so every word is aligned too.
template <int PDT, int V, int NV, bool MUL>
__device__ __forceinline__ void apply_param_t(float (&y)[NV][V], const void* p, i64 stride, bool vec, int nacc) {
  typedef typename StorageOf<PDT>::T S;
#pragma unroll
  for (int k = 0; k < NV; k++) {
    int a = threadIdx.x + k * blockDim.x;
    if (a < nacc) {
      float pv[V];
      if (V > 1 && vec && PDT != DT_F64 && PDT != DT_I32) load_row<PDT, V>(p, (i64)a * V, pv);
      else {
#pragma unroll
        for (int e = 0; e < V; e++) pv[e] = widen<PDT>(((const S*)p)[((i64)a * V + e) * stride]);
      }
#pragma unroll
      for (int e = 0; e < V; e++) y[k][e] = MUL ? y[k][e] * pv[e] : y[k][e] + pv[e];
    }
  }
}

template <int V, int NV, bool MUL>
__device__ __forceinline__ void apply_param(float (&y)[NV][V], const void* p, int dt, i64 stride, bool vec, int nacc) {
  switch (dt) {
    case DT_F32: apply_param_t<DT_F32, V, NV, MUL>(y, p, stride, vec, nacc); break;
    case DT_BF16: apply_param_t<DT_BF16, V, NV, MUL>(y, p, stride, vec, nacc); break;
    case DT_F16: apply_param_t<DT_F16, V, NV, MUL>(y, p, stride, vec, nacc); break;
    case DT_F64: apply_param_t<DT_F64, V, NV, MUL>(y, p, stride, vec, nacc); break;
    default: apply_param_t<DT_I32, V, NV, MUL>(y, p, stride, vec, nacc); break;
  }
}

#define LN_W_VEC 1
#define LN_B_VEC 2
// Backward: add the gradient already in gx (the input's other consumers') instead of overwriting it.
#define LN_GX_ACC 4

// One block of blockDim.x threads per row (grid-stride over rows); thread t owns the accesses
// t, t + blockDim.x, ... (NV of them, V elements each) of its row. The host guarantees
// blockDim.x * NV * V >= cols and V | cols.
template <int XDT, int ODT, int V, int NV>
__device__ __forceinline__ void ln_fwd_rows(const void* x, i64 xRow, const void* w, int wdt, i64 wStride, const void* b,
                                            int bdt, i64 bStride, void* out, i64 oRow, void* mean, int mdt,
                                            i64 mStride, void* rstd, int rdt, i64 rStride, i64 rows, i64 cols,
                                            float eps, int flags) {
  __shared__ float scratch[32];
  typedef typename StorageOf<XDT>::T XS;
  typedef typename StorageOf<ODT>::T OS;
  const int nacc = (int)(cols / V);
  const float inv = 1.0f / (float)cols;
  for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    const XS* xr = (const XS*)x + r * xRow;
    OS* orow = (OS*)out + r * oRow;
    float xv[NV][V];
    float s = 0.0f;
#pragma unroll
    for (int k = 0; k < NV; k++) {
      int a = threadIdx.x + k * blockDim.x;
      if (a < nacc) {
        load_row<XDT, V>(xr, (i64)a * V, xv[k]);
#pragma unroll
        for (int e = 0; e < V; e++) s += xv[k][e];
      } else {
#pragma unroll
        for (int e = 0; e < V; e++) xv[k][e] = 0.0f;
      }
    }
    const float mu = block_sum(s, scratch) * inv;
    float q = 0.0f;
#pragma unroll
    for (int k = 0; k < NV; k++) {
      if ((int)threadIdx.x + k * (int)blockDim.x < nacc) {
#pragma unroll
        for (int e = 0; e < V; e++) {
          float d = xv[k][e] - mu;
          q += d * d;
        }
      }
    }
    const float rs = 1.0f / sqrtf(block_sum(q, scratch) * inv + eps);
#pragma unroll
    for (int k = 0; k < NV; k++) {
#pragma unroll
      for (int e = 0; e < V; e++) xv[k][e] = (xv[k][e] - mu) * rs;
    }
    if (w) apply_param<V, NV, true>(xv, w, wdt, wStride, flags & LN_W_VEC, nacc);
    if (b) apply_param<V, NV, false>(xv, b, bdt, bStride, flags & LN_B_VEC, nacc);
#pragma unroll
    for (int k = 0; k < NV; k++) {
      int a = threadIdx.x + k * blockDim.x;
      if (a < nacc) store_row<ODT, V>(orow, (i64)a * V, xv[k]);
    }
    if (threadIdx.x == 0) {
      store_f(mean, mdt, r * mStride, mu);
      store_f(rstd, rdt, r * rStride, rs);
    }
  }
}

// Backward gx for the rows of this block (grid-stride), and, when pw / pb are given, this block's
// per-column sums of gy * xhat and gy over those rows, written to pw / pb[blockIdx.x * cols + j].
// gx is stored as XDT: a gradient takes its input's dtype.
template <int GDT, int XDT, int V, int NV>
__device__ __forceinline__ void ln_bwd_rows(const void* gy, i64 gyRow, const void* x, i64 xRow, const void* w, int wdt,
                                            i64 wStride, const void* mean, int mdt, i64 mStride, const void* rstd,
                                            int rdt, i64 rStride, void* gx, i64 gxRow, float* pw, float* pb, i64 rows,
                                            i64 cols, int flags) {
  __shared__ float scratch[32];
  typedef typename StorageOf<GDT>::T GS;
  typedef typename StorageOf<XDT>::T XS;
  const int nacc = (int)(cols / V);
  const float inv = 1.0f / (float)cols;
  float aw[NV][V], ab[NV][V];
#pragma unroll
  for (int k = 0; k < NV; k++) {
#pragma unroll
    for (int e = 0; e < V; e++) aw[k][e] = ab[k][e] = 0.0f;
  }
  for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    const XS* xr = (const XS*)x + r * xRow;
    const GS* gr = (const GS*)gy + r * gyRow;
    const float mu = load_f(mean, mdt, r * mStride), rs = load_f(rstd, rdt, r * rStride);
    float xh[NV][V], g[NV][V];
#pragma unroll
    for (int k = 0; k < NV; k++) {
      int a = threadIdx.x + k * blockDim.x;
      if (a < nacc) {
        load_row<XDT, V>(xr, (i64)a * V, xh[k]);
        load_row<GDT, V>(gr, (i64)a * V, g[k]);
      } else {
#pragma unroll
        for (int e = 0; e < V; e++) xh[k][e] = g[k][e] = 0.0f;
      }
    }
#pragma unroll
    for (int k = 0; k < NV; k++) {
      if ((int)threadIdx.x + k * (int)blockDim.x < nacc) {
#pragma unroll
        for (int e = 0; e < V; e++) {
          xh[k][e] = (xh[k][e] - mu) * rs;
          aw[k][e] += g[k][e] * xh[k][e];
          ab[k][e] += g[k][e];
        }
      }
    }
    if (w) apply_param<V, NV, true>(g, w, wdt, wStride, flags & LN_W_VEC, nacc);
    float s1 = 0.0f, s2 = 0.0f;
#pragma unroll
    for (int k = 0; k < NV; k++) {
      if ((int)threadIdx.x + k * (int)blockDim.x < nacc) {
#pragma unroll
        for (int e = 0; e < V; e++) {
          s1 += g[k][e];
          s2 += g[k][e] * xh[k][e];
        }
      }
    }
    const float m1 = block_sum(s1, scratch) * inv;
    const float m2 = block_sum(s2, scratch) * inv;
    XS* orow = (XS*)gx + r * gxRow;
#pragma unroll
    for (int k = 0; k < NV; k++) {
      int a = threadIdx.x + k * blockDim.x;
      if (a < nacc) {
        float o[V];
#pragma unroll
        for (int e = 0; e < V; e++) o[e] = rs * (g[k][e] - m1 - xh[k][e] * m2);
        if (flags & LN_GX_ACC) {
          float prev[V];
          load_row<XDT, V>(orow, (i64)a * V, prev);
#pragma unroll
          for (int e = 0; e < V; e++) o[e] += prev[e];
        }
        store_row<XDT, V>(orow, (i64)a * V, o);
      }
    }
  }
#pragma unroll
  for (int k = 0; k < NV; k++) {
    int a = threadIdx.x + k * blockDim.x;
    if (a < nacc) {
      i64 j = (i64)blockIdx.x * cols + (i64)a * V;
      if (pw) store_raw<float, V>(pw + j, aw[k]);
      if (pb) store_raw<float, V>(pb + j, ab[k]);
    }
  }
}

// Per-thread capacity in elements (forward, backward). The backward holds x, g and two column
// accumulators per element, so it takes half the forward's; the scalar variants take half again,
// since each scalar access needs its own address register. With these every variant fits the 64
// registers that 1024-thread blocks allow (launch bounds) without spilling; a wider V only
// regroups the same elements into fewer accesses. Must match LN_CAPACITY in src/ops/nn.ts.
#define LN_FWD_VEC 16
#define LN_FWD_SCALAR 8
#define LN_BWD_VEC 8
#define LN_BWD_SCALAR 4

#define LN_FWD_ARGS                                                                                                 \
  const void *x, i64 xRow, const void *w, int wdt, i64 wStride, const void *b, int bdt, i64 bStride, void *out,   \
      i64 oRow, void *mean, int mdt, i64 mStride, void *rstd, int rdt, i64 rStride, i64 rows, i64 cols, float eps, \
      int flags
#define LN_FWD_PASS x, xRow, w, wdt, wStride, b, bdt, bStride, out, oRow, mean, mdt, mStride, rstd, rdt, rStride, rows, cols, eps, flags
#define LN_BWD_ARGS                                                                                                 \
  const void *gy, i64 gyRow, const void *x, i64 xRow, const void *w, int wdt, i64 wStride, const void *mean,        \
      int mdt, i64 mStride, const void *rstd, int rdt, i64 rStride, void *gx, i64 gxRow, float *pw, float *pb,      \
      i64 rows, i64 cols, int flags
#define LN_BWD_PASS gy, gyRow, x, xRow, w, wdt, wStride, mean, mdt, mStride, rstd, rdt, rStride, gx, gxRow, pw, pb, rows, cols, flags

// The vector width of a pair of row dtypes: one 16-byte word of the narrower.
template <int A, int B>
__host__ __device__ constexpr int ln_width() {
  return 16 / (sizeof(typename StorageOf<A>::T) < sizeof(typename StorageOf<B>::T) ? sizeof(typename StorageOf<A>::T)
                                                                                   : sizeof(typename StorageOf<B>::T));
}

// For a dtype pair (A, B): layernorm_fwd_A_B reads x as A and writes out as B; layernorm_bwd_A_B
// reads gy as A and x as B and writes gx as B. The backward of a forward A -> B is therefore
// layernorm_bwd_B_A, and the same seven pairs serve both directions. V is written out (and checked)
// so that src/ops/nn.ts and its test can see it.
#define LN_VARIANTS(A, B, ADT, BDT, V)                                                               \
  static_assert(V == ln_width<ADT, BDT>(), "LN_VARIANTS: V must be 16 bytes of the narrower dtype"); \
  extern "C" __global__ void __launch_bounds__(1024) layernorm_fwd_##A##_##B##_vec(LN_FWD_ARGS) {    \
    ln_fwd_rows<ADT, BDT, V, LN_FWD_VEC / V>(LN_FWD_PASS);                                           \
  }                                                                                                  \
  extern "C" __global__ void __launch_bounds__(1024) layernorm_fwd_##A##_##B##_scalar(LN_FWD_ARGS) { \
    ln_fwd_rows<ADT, BDT, 1, LN_FWD_SCALAR>(LN_FWD_PASS);                                            \
  }                                                                                                  \
  extern "C" __global__ void __launch_bounds__(1024) layernorm_bwd_##A##_##B##_vec(LN_BWD_ARGS) {    \
    ln_bwd_rows<ADT, BDT, V, LN_BWD_VEC / V>(LN_BWD_PASS);                                           \
  }                                                                                                  \
  extern "C" __global__ void __launch_bounds__(1024) layernorm_bwd_##A##_##B##_scalar(LN_BWD_ARGS) { \
    ln_bwd_rows<ADT, BDT, 1, LN_BWD_SCALAR>(LN_BWD_PASS);                                            \
  }

LN_VARIANTS(f32, f32, DT_F32, DT_F32, 4)
LN_VARIANTS(bf16, bf16, DT_BF16, DT_BF16, 8)
LN_VARIANTS(f16, f16, DT_F16, DT_F16, 8)
LN_VARIANTS(f32, bf16, DT_F32, DT_BF16, 8)
LN_VARIANTS(f32, f16, DT_F32, DT_F16, 8)
LN_VARIANTS(bf16, f32, DT_BF16, DT_F32, 8)
LN_VARIANTS(f16, f32, DT_F16, DT_F32, 8)

// gw[j] += sum over parts of pw[., j] (blockIdx.y == 0), gb likewise from pb (blockIdx.y == 1).
// Block (32, 32): 32 columns per block (128-byte rows of partials), the 32 thread rows take every
// 32nd part, then one thread per column adds the 32 sums in order. Every step has a fixed order.
extern "C" __global__ void __launch_bounds__(1024) layernorm_bwd_dwdb_reduce(const float* pw, const float* pb,
                                                                             i64 parts, i64 cols, void* gw, int gwdt,
                                                                             i64 gwStride, void* gb, int gbdt,
                                                                             i64 gbStride) {
  __shared__ double sums[32][33];
  const float* p = blockIdx.y == 0 ? pw : pb;
  void* dst = blockIdx.y == 0 ? gw : gb;
  if (p == 0 || dst == 0) return;
  const i64 j = (i64)blockIdx.x * 32 + threadIdx.x;
  double s = 0.0;
  if (j < cols)
    for (i64 c = threadIdx.y; c < parts; c += 32) s += (double)p[c * cols + j];
  sums[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && j < cols) {
    double t = 0.0;
    for (int k = 0; k < 32; k++) t += sums[k][threadIdx.x];
    const int dt = blockIdx.y == 0 ? gwdt : gbdt;
    const i64 off = j * (blockIdx.y == 0 ? gwStride : gbStride);
    store_d(dst, dt, off, load_d(dst, dt, off) + t);
  }
}
