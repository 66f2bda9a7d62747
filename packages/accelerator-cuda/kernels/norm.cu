// norm.cu: the global L2 norm of many tensors at once (the gradient norm that clipping needs).
//
// Multi-tensor like adamw.cu: a table of chunks, one block per chunk writing its sum of squares to
// a partial, then one block adding the partials in a fixed order. No atomics, so the norm is the
// same bits on every run, which keeps clipped training reproducible (DESIGN.md, decision 8).
#include "common.cuh"

// Layout must match NORM_CHUNK_BYTES in src/ops/optim.ts (24 bytes).
struct NormChunk {
  u64 p;
  i64 n;
  int dt;
  int pad;
};

extern "C" __global__ void sumsq_partial(const NormChunk* table, int count, double* partials) {
  __shared__ double scratch[32];
  for (int c = blockIdx.x; c < count; c += gridDim.x) {
    NormChunk t = table[c];
    double s = 0.0;
    for (i64 i = threadIdx.x; i < t.n; i += blockDim.x) {
      double x = load_d((const void*)t.p, t.dt, i);
      s += x * x;
    }
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) partials[c] = s;
    __syncthreads();
  }
}

// out[0] = sqrt(sum of partials) (or the plain sum when takeSqrt is 0). Launch with one block.
extern "C" __global__ void sumsq_final(const double* partials, int count, void* out, int odt, int takeSqrt) {
  __shared__ double scratch[32];
  double s = 0.0;
  for (int i = threadIdx.x; i < count; i += blockDim.x) s += partials[i];
  s = block_sum(s, scratch);
  if (threadIdx.x == 0) store_d(out, odt, 0, takeSqrt ? sqrt(s) : s);
}
