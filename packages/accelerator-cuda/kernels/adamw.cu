// adamw.cu: one fused AdamW update over many parameter tensors (Backend.adamw), PyTorch's formula
// with decoupled weight decay:
//   g = maximize ? -grad : grad;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p = p (1 - lr wd) - lr (m / bc1) / (sqrt(v / bc2) + eps),  bc_k = 1 - b_k^step
//
// Multi-tensor: the host splits every (param, grad, exp_avg, exp_avg_sq) quadruple into chunks of at
// most a fixed number of elements and uploads a table of chunks; one launch updates them all, one
// block per chunk. An optimizer step is then one kernel instead of a dozen elementwise ones per
// parameter. The arithmetic is in double (the CPU reference's precision), rounded once on store:
// the kernel is bound by memory traffic, so the double math costs nothing that shows.
#include "common.cuh"

// One chunk of one parameter: device pointers already offset to the chunk start. Layout must match
// ADAMW_CHUNK_BYTES in src/ops/optim.ts (64 bytes).
struct AdamWChunk {
  u64 p, g, m, v;
  i64 n;
  int pdt, gdt, mdt, vdt;
  i64 pad;
};

extern "C" __global__ void adamw_multi(const AdamWChunk* table, int count, double lr, double beta1, double beta2,
                                       double eps, double decay, double bc1, double bc2, double sign) {
  for (int c = blockIdx.x; c < count; c += gridDim.x) {
    AdamWChunk t = table[c];
    void* p = (void*)t.p;
    const void* g = (const void*)t.g;
    void* m = (void*)t.m;
    void* v = (void*)t.v;
    for (i64 i = threadIdx.x; i < t.n; i += blockDim.x) {
      double gi = sign * load_d(g, t.gdt, i);
      double mi = beta1 * load_d(m, t.mdt, i) + (1.0 - beta1) * gi;
      double vi = beta2 * load_d(v, t.vdt, i) + (1.0 - beta2) * gi * gi;
      store_d(m, t.mdt, i, mi);
      store_d(v, t.vdt, i, vi);
      double pi = load_d(p, t.pdt, i);
      store_d(p, t.pdt, i, pi * decay - (lr * (mi / bc1)) / (sqrt(vi / bc2) + eps));
    }
  }
}
