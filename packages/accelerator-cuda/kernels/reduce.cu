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

// ---- Two-stage column reduction ------------------------------------------------------------
//
// The bias gradient [R, C] -> [1, C] over a row-major x (x[r * ls + c], ls >= C). reduce_cols
// launches only C / 32 blocks (256 for C = 8192: under two per SM) and loads one element per
// thread through the dtype switch, so it reached a fraction of the bandwidth. Here:
// - stage 1 (reduce_cols_partial): blocks tile (column group x row chunk); the host picks the
//   number of row chunks so the grid holds at least 4 blocks per SM. Each lane owns VEC (8)
//   adjacent columns read in 16-byte accesses when aligned (`vec`), else one column; the 8 warps
//   of a block take interleaved rows and four rows' loads are in flight before they are summed.
//   Warps combine in shared memory in warp order, and the block writes one partial per column to
//   part[chunk * C + c]: float32 for 16/32-bit float input (exact for max/min, and a chunk of at
//   most a few hundred rows loses nothing that matters against the float64 CPU reference), float64
//   for float64 and int32 input, where float32 would round.
// - stage 2 (reduce_cols_finish): per column, chunks combined in float64 by 8 slices in a fixed
//   interleave, slices combined in order; writes the output dtype.
// No atomics and a fixed combine order everywhere: the result depends only on the shapes and the
// chunk count (which depends on the GPU's SM count), never on timing.
template <typename A>
__device__ __forceinline__ A combine_t(int op, A acc, A v) {
  if (op == R_SUM) return acc + v;
  if (v != v || acc != acc) return acc != acc ? acc : v;
  if (op == R_MAX) return v > acc ? v : acc;
  return v < acc ? v : acc;
}

template <typename A>
__device__ __forceinline__ A identity_t(int op) {
  return op == R_SUM ? (A)0 : (op == R_MAX ? -(A)d_inf() : (A)d_inf());
}

#define PART_WARPS 8

template <typename A, int V>
__device__ __forceinline__ void load_group(const void* x, int xdt, u64 i, A (&v)[V]) {
  if constexpr (V == VEC)
    load8(x, xdt, i, v);
  else
    load_as(x, xdt, (i64)i, v[0]);
}

template <typename A, int V>
__device__ __forceinline__ void cols_partial(const void* x, int xdt, A* part, u64 R, u64 C, u64 ls, u64 rpc, int op,
                                             A* sm) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const u64 c0 = (u64)blockIdx.x * 32 * V, c = c0 + (u64)lane * V;
  const u64 r0 = (u64)blockIdx.y * rpc, r1 = r0 + rpc < R ? r0 + rpc : R;
  A acc[V];
#pragma unroll
  for (int k = 0; k < V; k++) acc[k] = identity_t<A>(op);
  if (c < C) {
    u64 r = r0 + warp;
    for (; r + 3 * PART_WARPS < r1; r += 4 * PART_WARPS) {
      A v0[V], v1[V], v2[V], v3[V];
      load_group(x, xdt, r * ls + c, v0);
      load_group(x, xdt, (r + PART_WARPS) * ls + c, v1);
      load_group(x, xdt, (r + 2 * PART_WARPS) * ls + c, v2);
      load_group(x, xdt, (r + 3 * PART_WARPS) * ls + c, v3);
#pragma unroll
      for (int k = 0; k < V; k++) acc[k] = combine_t(op, combine_t(op, combine_t(op, combine_t(op, acc[k], v0[k]), v1[k]), v2[k]), v3[k]);
    }
    for (; r < r1; r += PART_WARPS) {
      A v0[V];
      load_group(x, xdt, r * ls + c, v0);
#pragma unroll
      for (int k = 0; k < V; k++) acc[k] = combine_t(op, acc[k], v0[k]);
    }
  }
  // sm[warp][col], col in [0, 32 * V): combined over warps in warp order.
#pragma unroll
  for (int k = 0; k < V; k++) sm[warp * 32 * V + lane * V + k] = acc[k];
  __syncthreads();
  for (int j = threadIdx.x; j < 32 * V; j += blockDim.x) {
    if (c0 + j >= C) break;
    A s = sm[j];
    for (int w = 1; w < PART_WARPS; w++) s = combine_t(op, s, sm[w * 32 * V + j]);
    part[(u64)blockIdx.y * C + c0 + j] = s;
  }
}

// Block: 32 x PART_WARPS threads; grid: (column groups, chunks). `pdt` is DT_F32 or DT_F64.
extern "C" __global__ void reduce_cols_partial(const void* x, int xdt, void* part, int pdt, u64 R, u64 C, u64 ls, u64 rpc,
                                               int op, int vec) {
  __shared__ double sm[PART_WARPS * 32 * VEC];
  if (pdt == DT_F64) {
    if (vec)
      cols_partial<double, VEC>(x, xdt, (double*)part, R, C, ls, rpc, op, sm);
    else
      cols_partial<double, 1>(x, xdt, (double*)part, R, C, ls, rpc, op, sm);
  } else {
    if (vec)
      cols_partial<float, VEC>(x, xdt, (float*)part, R, C, ls, rpc, op, (float*)sm);
    else
      cols_partial<float, 1>(x, xdt, (float*)part, R, C, ls, rpc, op, (float*)sm);
  }
}

// Block: 32 columns x PART_WARPS slices; grid: ceil(C / 32).
extern "C" __global__ void reduce_cols_finish(const void* part, int pdt, void* out, int odt, u64 C, u64 chunks, int op) {
  __shared__ double sm[PART_WARPS][33];
  const int lane = threadIdx.x & 31, slice = threadIdx.x >> 5;
  const u64 c = (u64)blockIdx.x * 32 + lane;
  double acc = identity(op);
  if (c < C)
    for (u64 k = slice; k < chunks; k += PART_WARPS) acc = combine(op, acc, load_d(part, pdt, (i64)(k * C + c)));
  sm[slice][lane] = acc;
  __syncthreads();
  if (slice == 0 && c < C) {
    for (int k = 1; k < PART_WARPS; k++) acc = combine(op, acc, sm[k][lane]);
    store_d(out, odt, (i64)c, acc);
  }
}
