// accumulate.cu: dst += src over many contiguous float32 pairs in one launch (Backend.addMany):
// gradient accumulation into many small leaves ([Note: accumulations gathered] in @fulgur/tensor).
// One launch of a few blocks replaces one elementwise add per leaf, each costing the GPU a launch
// for a few thousand floats.
//
// The host cuts every pair into chunks of at most ACC_CHUNK elements (src/ops/accumulate.ts,
// accumulateTable) and uploads the table; block b takes chunks b, b + gridDim.x, ... A dst appears
// in one pair at most, so no two threads write one element. Each element is rounded once (a + b in
// float32), as ew_binary_flat's add, so the sums are the ones of separate adds, to the bit.
#include "common.cuh"

// Layout must match src/ops/accumulate.ts (24 bytes).
struct AccChunk {
  u64 dst;
  u64 src;
  i64 n;
};

extern "C" __global__ void __launch_bounds__(256) add_multi(const AccChunk* table, int count) {
  for (int c = blockIdx.x; c < count; c += gridDim.x) {
    const AccChunk k = table[c];
    float* d = (float*)k.dst;
    const float* s = (const float*)k.src;
    for (i64 i = threadIdx.x; i < k.n; i += blockDim.x) d[i] = d[i] + s[i];
  }
}
