// adamw.cu: one fused AdamW update over many parameter tensors (Backend.adamw), PyTorch's formula
// with decoupled weight decay:
//   g = maximize ? -grad : grad;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p = p (1 - lr wd) - lr (m / bc1) / (sqrt(v / bc2) + eps),  bc_k = 1 - b_k^step
//
// Multi-tensor: the host splits every (param, grad, exp_avg, exp_avg_sq) quadruple into chunks of at
// most a fixed number of elements and uploads a table of chunks; one launch updates them all, one
// block per 4096-element tile of a chunk at a time. An optimizer step is then one kernel instead of
// a dozen elementwise ones per parameter. The arithmetic is in double (the CPU reference's
// precision), rounded once on store: at 28 bytes per float32 parameter the kernel is bound by
// memory traffic, and H100's float64 rate covers the few dozen float64 instructions per element.
#include "common.cuh"

// One chunk of one parameter: device pointers already offset to the chunk start; lp (0 when absent)
// receives the updated parameter rounded to ldt, autocast's low-precision copy, in the same pass.
// Layout must match ADAMW_CHUNK_BYTES in src/ops/optim.ts (72 bytes).
struct AdamWChunk {
  u64 p, g, m, v, lp;
  i64 n;
  int pdt, gdt, mdt, vdt, ldt, pad;
};

// Elements per tile: the unit of work of one block (256 threads x 4 elements x 4 rounds). A table
// chunk (CHUNK = 65536 elements in src/ops/optim.ts) is ADAMW_TILES_PER_CHUNK tiles, so a step
// spreads over many more blocks than chunks and the last wave is short. Must match
// ADAMW_TILE in src/ops/optim.ts.
#define ADAMW_TILE 4096
#define ADAMW_TILES_PER_CHUNK 16

struct alignas(16) Raw16 {
  u32 a, b, c, d;
};
struct alignas(8) Raw8 {
  u32 a, b;
};

// Whether 4-element words of a tensor of dtype dt at p can be loaded whole: float32 in 16 bytes,
// the 16-bit floats in 8 (float64 and int32 state stay on the scalar path).
__device__ __forceinline__ bool vec4_ok(u64 p, int dt) {
  if (dt == DT_F32) return (p & 15u) == 0;
  if (dt == DT_BF16 || dt == DT_F16) return (p & 7u) == 0;
  return false;
}

// The table holds plain addresses, so the compiler cannot tell they are global memory and would
// emit generic loads and stores; these say so (cvta.to.global is the identity on global memory).
__device__ __forceinline__ Raw16 ld_global16(const void* p) {
  Raw16 r;
  asm("{.reg .u64 a; cvta.to.global.u64 a, %4; ld.global.v4.u32 {%0, %1, %2, %3}, [a];}"
      : "=r"(r.a), "=r"(r.b), "=r"(r.c), "=r"(r.d)
      : "l"(p));
  return r;
}
__device__ __forceinline__ Raw8 ld_global8(const void* p) {
  Raw8 r;
  asm("{.reg .u64 a; cvta.to.global.u64 a, %2; ld.global.v2.u32 {%0, %1}, [a];}" : "=r"(r.a), "=r"(r.b) : "l"(p));
  return r;
}
__device__ __forceinline__ void st_global16(void* p, Raw16 w) {
  asm volatile("{.reg .u64 a; cvta.to.global.u64 a, %0; st.global.v4.u32 [a], {%1, %2, %3, %4};}" ::"l"(p), "r"(w.a),
               "r"(w.b), "r"(w.c), "r"(w.d)
               : "memory");
}
__device__ __forceinline__ void st_global8(void* p, Raw8 w) {
  asm volatile("{.reg .u64 a; cvta.to.global.u64 a, %0; st.global.v2.u32 [a], {%1, %2};}" ::"l"(p), "r"(w.a), "r"(w.b)
               : "memory");
}

__device__ __forceinline__ void load4(const void* p, int dt, i64 i, double (&o)[4]) {
  if (dt == DT_F32) {
    Raw16 w = ld_global16((const float*)p + i);
    o[0] = (double)__uint_as_float(w.a);
    o[1] = (double)__uint_as_float(w.b);
    o[2] = (double)__uint_as_float(w.c);
    o[3] = (double)__uint_as_float(w.d);
  } else {
    Raw8 w = ld_global8((const u16*)p + i);
    u16 h[4] = {(u16)(w.a & 0xffffu), (u16)(w.a >> 16), (u16)(w.b & 0xffffu), (u16)(w.b >> 16)};
#pragma unroll
    for (int e = 0; e < 4; e++) o[e] = (double)(dt == DT_BF16 ? bf16_to_f32(h[e]) : f16_to_f32(h[e]));
  }
}

// Rounds like store_d: 16-bit floats through float32 first, as the CPU encoder does.
__device__ __forceinline__ void store4(void* p, int dt, i64 i, const double (&v)[4]) {
  if (dt == DT_F32) {
    Raw16 w;
    w.a = __float_as_uint((float)v[0]);
    w.b = __float_as_uint((float)v[1]);
    w.c = __float_as_uint((float)v[2]);
    w.d = __float_as_uint((float)v[3]);
    st_global16((float*)p + i, w);
  } else {
    u32 h[4];
#pragma unroll
    for (int e = 0; e < 4; e++) h[e] = dt == DT_BF16 ? f32_to_bf16((float)v[e]) : f32_to_f16((float)v[e]);
    Raw8 w;
    w.a = h[0] | (h[1] << 16);
    w.b = h[2] | (h[3] << 16);
    st_global8((u16*)p + i, w);
  }
}

struct AdamWConsts {
  double lr, beta1, beta2, eps, decay, bc1, bc2, sign;
};

// The CPU reference's update of one element, operation for operation.
__device__ __forceinline__ void adamw_one(const AdamWConsts& k, double g, double& m, double& v, double& p) {
  g *= k.sign;
  m = k.beta1 * m + (1.0 - k.beta1) * g;
  v = k.beta2 * v + (1.0 - k.beta2) * g * g;
  p = p * k.decay - (k.lr * (m / k.bc1)) / (sqrt(v / k.bc2) + k.eps);
}

// Grid-stride over tiles (chunk c = tile / ADAMW_TILES_PER_CHUNK). A tile whose four tensors are
// all float32 / 16-bit and word-aligned is updated 4 elements a thread at a time (16-byte loads and
// stores of p, m, v, g for float32; 8-byte for 16-bit gradients, widened in registers), its
// n % 4 tail and every other tile one element at a time. The update is the CPU reference's
// float64 arithmetic, rounded once on store: the kernel is bound by memory traffic, not by it.
extern "C" __global__ void __launch_bounds__(256) adamw_multi(const AdamWChunk* table, int count, double lr,
                                                             double beta1, double beta2, double eps, double decay,
                                                             double bc1, double bc2, double sign) {
  const AdamWConsts k = {lr, beta1, beta2, eps, decay, bc1, bc2, sign};
  const i64 tiles = (i64)count * ADAMW_TILES_PER_CHUNK;
  for (i64 tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const AdamWChunk& t = table[tile / ADAMW_TILES_PER_CHUNK];
    const i64 n = t.n;
    const i64 start = (tile % ADAMW_TILES_PER_CHUNK) * ADAMW_TILE;
    if (start >= n) continue;
    const i64 end = start + ADAMW_TILE < n ? start + ADAMW_TILE : n;
    void* p = (void*)t.p;
    const void* g = (const void*)t.g;
    void* m = (void*)t.m;
    void* v = (void*)t.v;
    void* lp = (void*)t.lp;
    const int pdt = t.pdt, gdt = t.gdt, mdt = t.mdt, vdt = t.vdt, ldt = t.ldt;
    i64 i = start;
    if (vec4_ok(t.p, pdt) && vec4_ok(t.g, gdt) && vec4_ok(t.m, mdt) && vec4_ok(t.v, vdt) && (!lp || vec4_ok(t.lp, ldt))) {
      const i64 vend = start + ((end - start) & ~(i64)3);
      for (i64 j = start + 4 * (i64)threadIdx.x; j < vend; j += 4 * (i64)blockDim.x) {
        double pv[4], gv[4], mv[4], vv[4];
        load4(g, gdt, j, gv);
        load4(m, mdt, j, mv);
        load4(v, vdt, j, vv);
        load4(p, pdt, j, pv);
#pragma unroll
        for (int e = 0; e < 4; e++) adamw_one(k, gv[e], mv[e], vv[e], pv[e]);
        store4(m, mdt, j, mv);
        store4(v, vdt, j, vv);
        store4(p, pdt, j, pv);
        // store4 rounds through float, the value just stored to p: what a later cast of p gives.
        if (lp) store4(lp, ldt, j, pv);
      }
      i = vend;
    }
    for (i64 j = i + threadIdx.x; j < end; j += blockDim.x) {
      double mi = load_d(m, mdt, j), vi = load_d(v, vdt, j), pi = load_d(p, pdt, j);
      adamw_one(k, load_d(g, gdt, j), mi, vi, pi);
      store_d(m, mdt, j, mi);
      store_d(v, vdt, j, vi);
      store_d(p, pdt, j, pi);
      if (lp) store_d(lp, ldt, j, load_d(p, pdt, j));
    }
  }
}
