// cross_entropy.cu: per-row cross entropy from logits, forward and backward (Backend.crossEntropy
// and crossEntropyBackward).
//
// Forward saves logsumexp per row, so backward recomputes softmax from the logits and never needs a
// [N, C] probability matrix: for a 32000-word vocabulary that matrix would be the largest activation
// of the model. One block per row; the row max and the sum of exponentials are block reductions, the
// sum in double to track the float64 CPU reference. A target outside [0, C) that is not ignoreIndex
// is a data bug: the row's loss becomes NaN and the device error flag records the target and row,
// which the host raises at its next synchronisation.
#include "common.cuh"

extern "C" __global__ void ce_fwd(const void* logits, int ldt, i64 lRow, const int* targets, i64 tStride, int ignore,
                                  void* loss, int lossdt, i64 lossStride, void* lse, int lsedt, i64 lseStride, i64 rows,
                                  i64 classes, int* status) {
  __shared__ float fscratch[32];
  __shared__ double dscratch[32];
  for (i64 r = blockIdx.x; r < rows; r += gridDim.x) {
    i64 base = r * lRow;
    float m = -f_inf();
    for (i64 j = threadIdx.x; j < classes; j += blockDim.x) m = fmaxf(m, load_f(logits, ldt, base + j));
    m = block_max(m, fscratch);
    double s = 0.0;
    for (i64 j = threadIdx.x; j < classes; j += blockDim.x) s += (double)expf(load_f(logits, ldt, base + j) - m);
    s = block_sum(s, dscratch);
    if (threadIdx.x == 0) {
      double l = (double)m + log(s);
      int t = targets[r * tStride];
      double value;
      if (t == ignore) {
        value = 0.0;
      } else if (t < 0 || (i64)t >= classes) {
        report_status(status, STATUS_CE_TARGET, t, r, classes);
        value = d_nan();
      } else {
        value = l - load_d(logits, ldt, base + t);
      }
      store_d(loss, lossdt, r * lossStride, value);
      store_d(lse, lsedt, r * lseStride, l);
    }
    __syncthreads();
  }
}

// glogits[i] = gloss[i] * (softmax(logits[i]) - onehot(t[i])), zero on ignored rows. gStride is 0
// when the loss gradient is one scalar for every row (a mean reduction's backward).
extern "C" __global__ void ce_bwd(const void* logits, int ldt, i64 lRow, const int* targets, i64 tStride,
                                  const void* lse, int lsedt, i64 lseStride, const void* gloss, int gdt, i64 gStride,
                                  int ignore, void* glogits, int odt, i64 oRow, i64 rows, i64 classes, int* status) {
  GRID_LOOP(e, (u64)(rows * classes)) {
    i64 r = (i64)e / classes, j = (i64)e - r * classes;
    int t = targets[r * tStride];
    double v;
    if (t == ignore) {
      v = 0.0;
    } else if (t < 0 || (i64)t >= classes) {
      if (j == 0) report_status(status, STATUS_CE_TARGET, t, r, classes);
      v = d_nan();
    } else {
      double g = load_d(gloss, gdt, r * gStride);
      double p = exp(load_d(logits, ldt, r * lRow + j) - load_d(lse, lsedt, r * lseStride));
      v = g * p - (j == (i64)t ? g : 0.0);
    }
    store_d(glogits, odt, r * oRow + j, v);
  }
}
