// softmax.cu: softmax and log-softmax over the last dim, forward and backward (Backend.softmax and
// softmaxBackward).
//
// One block per row; rows are read from global memory three times (max, sum, write), which stays
// in L2 for rows up to a few MB and keeps the kernel free of a shared-memory row buffer whose size
// would cap the row length. The row max is subtracted before exponentiating so large logits cannot
// overflow; row sums accumulate in double to track the CPU reference (float64) within float32
// rounding. The host passes each operand's row stride; the last dim must be contiguous.
#include "common.cuh"

extern "C" __global__ void softmax_fwd(const void* x, int xdt, i64 xRow, void* out, int odt, i64 oRow, i64 rows,
                                       i64 cols, int logMode) {
  __shared__ float fscratch[32];
  __shared__ double dscratch[32];
  for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    i64 xb = r * xRow, ob = r * oRow;
    float m = -f_inf();
    for (i64 j = threadIdx.x; j < cols; j += blockDim.x) m = fmaxf(m, load_f(x, xdt, xb + j));
    m = block_max(m, fscratch);
    double s = 0.0;
    for (i64 j = threadIdx.x; j < cols; j += blockDim.x) s += (double)expf(load_f(x, xdt, xb + j) - m);
    s = block_sum(s, dscratch);
    if (logMode) {
      double shift = (double)m + log(s);
      for (i64 j = threadIdx.x; j < cols; j += blockDim.x) store_d(out, odt, ob + j, load_d(x, xdt, xb + j) - shift);
    } else {
      float inv = (float)(1.0 / s);
      for (i64 j = threadIdx.x; j < cols; j += blockDim.x) store_f(out, odt, ob + j, expf(load_f(x, xdt, xb + j) - m) * inv);
    }
    __syncthreads();
  }
}

// softmax: gx = y * (gy - sum(gy * y)); log-softmax: gx = gy - exp(y) * sum(gy).
extern "C" __global__ void softmax_bwd(const void* y, int ydt, i64 yRow, const void* gy, int gydt, i64 gyRow, void* gx,
                                       int gxdt, i64 gxRow, i64 rows, i64 cols, int logMode) {
  __shared__ double dscratch[32];
  for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    i64 yb = r * yRow, gb = r * gyRow, xb = r * gxRow;
    double s = 0.0;
    for (i64 j = threadIdx.x; j < cols; j += blockDim.x) {
      double g = load_d(gy, gydt, gb + j);
      s += logMode ? g : g * load_d(y, ydt, yb + j);
    }
    s = block_sum(s, dscratch);
    for (i64 j = threadIdx.x; j < cols; j += blockDim.x) {
      float yv = load_f(y, ydt, yb + j), g = load_f(gy, gydt, gb + j);
      float v = logMode ? g - expf(yv) * (float)s : yv * (g - (float)s);
      store_f(gx, gxdt, xb + j, v);
    }
    __syncthreads();
  }
}
