// layernorm.cu: layer norm over the last dim (biased variance), forward and backward
// (Backend.layerNorm and layerNormBackward).
//
// Forward: one block per row; the mean and then the squared deviations are summed in two passes
// (a one-pass E[x^2] - E[x]^2 cancels badly on rows with a large mean, as the CPU reference notes),
// both in double. mean and rstd are saved per row for backward.
//
// Backward: gx needs two row sums, so it is again one block per row. The weight and bias gradients
// are sums over all rows; rather than atomics (whose order, and so whose rounding, changes from run
// to run) they are reduced in two deterministic steps: each block of rows writes per-column partial
// sums, then one thread per column adds the partials and accumulates into gw / gb (which the
// contract says are added to, not overwritten).
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

// gx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = gy * weight, xhat = (x - mean) * rstd.
extern "C" __global__ void layernorm_bwd_dx(const void* gy, int gydt, i64 gyRow, const void* x, int xdt, i64 xRow,
                                            const void* w, int wdt, i64 wStride, const void* mean, int mdt,
                                            i64 mStride, const void* rstd, int rdt, i64 rStride, void* gx, int gxdt,
                                            i64 gxRow, i64 rows, i64 cols) {
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
      store_d(gx, gxdt, ob + j, rs * (g - m1 - xh * m2));
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
