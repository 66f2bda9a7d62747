// reduce.cu: sum / max / min / argmax of a strided view into a keepdim-shaped contiguous output,
// the GPU side of Backend.reduce.
//
// The host splits x's dims into kept ("outer", one output element per index) and reduced ("inner")
// dims, each with x's strides, and picks one of two layouts:
// - reduce_rows: one block per output element, its threads striding over the reduced elements.
//   Right when the reduced elements are contiguous (softmax-like row sums, the loss mean).
// - reduce_cols: 32 output elements per block, one per lane, row slices summed in shared memory. Right when the
//   innermost dim is kept (the bias gradient [N, D] -> [1, D]): neighbouring threads then read
//   neighbouring addresses, so every load is coalesced.
// Accumulation is in double whatever the dtype: the CPU reference sums in float64, and these
// kernels are bound by memory bandwidth, not arithmetic. max/min propagate NaN as PyTorch does;
// argmax returns the first index of the maximum, NaN counting as the maximum.
#include "common.cuh"

#define R_SUM 0
#define R_MAX 1
#define R_MIN 2

__device__ __forceinline__ double combine(int op, double acc, double v) {
  if (op == R_SUM) return acc + v;
  if (v != v || acc != acc) return acc != acc ? acc : v;
  if (op == R_MAX) return v > acc ? v : acc;
  return v < acc ? v : acc;
}

__device__ __forceinline__ double identity(int op) {
  return op == R_SUM ? 0.0 : (op == R_MAX ? -d_inf() : d_inf());
}

extern "C" __global__ void reduce_rows(const void* x, int xdt, void* out, int odt, Shape8 outer, Strides8 outerSt,
                                       Shape8 inner, Strides8 innerSt, u64 nOut, u64 nInner, int op) {
  __shared__ double scratch[32];
  for (u64 o = blockIdx.x; o < nOut; o += gridDim.x) {
    i64 base = offset_of(o, outer, outerSt);
    double acc = identity(op);
    for (u64 r = threadIdx.x; r < nInner; r += blockDim.x) acc = combine(op, acc, load_d(x, xdt, base + offset_of(r, inner, innerSt)));
    // Warp then block combine; done by hand because max/min need the NaN rule.
    for (int off = 16; off > 0; off >>= 1) acc = combine(op, acc, __shfl_xor_sync(0xffffffffu, acc, off));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) scratch[warp] = acc;
    __syncthreads();
    if (warp == 0) {
      acc = lane < nwarps ? scratch[lane] : identity(op);
      for (int off = 16; off > 0; off >>= 1) acc = combine(op, acc, __shfl_xor_sync(0xffffffffu, acc, off));
      if (lane == 0) store_d(out, odt, (i64)o, acc);
    }
  }
}

// 32 outputs per block (one per lane, so each row read is coalesced) and COL_SLICES groups of rows
// per output: one thread per output left most of the GPU idle and serialised 4096-row sums (the
// bias gradient of the 1b GPT took 2.5 ms). Slices combine in a fixed order: deterministic.
#define COL_SLICES 16
extern "C" __global__ void reduce_cols(const void* x, int xdt, void* out, int odt, Shape8 outer, Strides8 outerSt,
                                       Shape8 inner, Strides8 innerSt, u64 nOut, u64 nInner, int op) {
  __shared__ double part[COL_SLICES][33];
  const int lane = threadIdx.x & 31, slice = threadIdx.x >> 5;
  const u64 o = (u64)blockIdx.x * 32 + lane;
  double acc = identity(op);
  if (o < nOut) {
    const i64 base = offset_of(o, outer, outerSt);
    if (inner.ndim == 1) {
      const i64 step = innerSt.s[0];
      for (u64 r = slice; r < nInner; r += COL_SLICES) acc = combine(op, acc, load_d(x, xdt, base + (i64)r * step));
    } else {
      for (u64 r = slice; r < nInner; r += COL_SLICES) acc = combine(op, acc, load_d(x, xdt, base + offset_of(r, inner, innerSt)));
    }
  }
  part[slice][lane] = acc;
  __syncthreads();
  if (slice == 0 && o < nOut) {
    for (int k = 1; k < COL_SLICES; k++) acc = combine(op, acc, part[k][lane]);
    store_d(out, odt, (i64)o, acc);
  }
}

// True when (v, i) should replace (best, bi) as the running argmax.
__device__ __forceinline__ bool better(double v, i64 i, double best, i64 bi) {
  bool vn = v != v, bn = best != best;
  if (vn || bn) return vn && (!bn || i < bi);
  return v > best || (v == best && i < bi);
}

// One reduced dim of length nInner and x-stride `step`; one block per output element.
extern "C" __global__ void argmax_rows(const void* x, int xdt, void* out, int odt, Shape8 outer, Strides8 outerSt,
                                       i64 step, u64 nOut, u64 nInner) {
  __shared__ double sv[32];
  __shared__ i64 si[32];
  for (u64 o = blockIdx.x; o < nOut; o += gridDim.x) {
    i64 base = offset_of(o, outer, outerSt);
    double best = -d_inf();
    i64 bi = (i64)nInner;  // sentinel: larger than any index, so any element wins a tie
    for (u64 r = threadIdx.x; r < nInner; r += blockDim.x) {
      double v = load_d(x, xdt, base + (i64)r * step);
      if (better(v, (i64)r, best, bi)) {
        best = v;
        bi = (i64)r;
      }
    }
    for (int off = 16; off > 0; off >>= 1) {
      double v = __shfl_xor_sync(0xffffffffu, best, off);
      i64 i = __shfl_xor_sync(0xffffffffu, bi, off);
      if (better(v, i, best, bi)) {
        best = v;
        bi = i;
      }
    }
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) {
      sv[warp] = best;
      si[warp] = bi;
    }
    __syncthreads();
    if (warp == 0) {
      best = lane < nwarps ? sv[lane] : -d_inf();
      bi = lane < nwarps ? si[lane] : (i64)nInner;
      for (int off = 16; off > 0; off >>= 1) {
        double v = __shfl_xor_sync(0xffffffffu, best, off);
        i64 i = __shfl_xor_sync(0xffffffffu, bi, off);
        if (better(v, i, best, bi)) {
          best = v;
          bi = i;
        }
      }
      // A row of only -inf leaves the sentinel: index 0 is then the first maximum.
      if (lane == 0) store_d(out, odt, (i64)o, (double)(bi >= (i64)nInner ? 0 : bi));
    }
  }
}
