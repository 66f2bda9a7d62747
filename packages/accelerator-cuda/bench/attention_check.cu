// attention_check.cu: standalone validation and timing of the tensor-core flash attention
// (kernels/attention_mma.cu) against the fp32 reference kernels (kernels/attention.cu), on one GPU,
// with no Node.js involved. Build and run (from packages/accelerator-cuda):
//
//   nvcc -O3 -std=c++17 -arch=sm_90 -o /tmp/attn_check bench/attention_check.cu && /tmp/attn_check
//
// (-arch=sm_80 for an A100.) For each shape it fills q, k, v, dO with fresh random 16-bit values,
// runs the reference forward (fp32 out) and the mma forward, then both backwards from the same
// inputs (q, k, v, dO, the reference out rounded to the input dtype, the reference lse), and prints
// per tensor: max abs error, relative error ||new - ref|| / ||ref||, the number of non-finite
// outputs (outputs are poisoned with NaN before every run, so an unwritten element shows up), and
// PASS/FAIL. Tolerances: out, dq, dk, dv relative error < 1e-2 (16-bit outputs and 16-bit P / dS
// operands); lse max abs error < 1e-3 (fp32 on both sides; expect ~1e-6). Then it times, at the
// 1b GPT's shape (B4 H16 T1024 D128 bf16 causal), the reference and mma forward, backward and
// forward+backward (cudaEvent, median of 10 after 3 warm-ups) in ms and TFLOP/s, counting
// 2*B*H*T^2*D flops for the causal forward (4*B*H*T^2*D/2) and 3.5x that for forward+backward.
// Exit status: 0 when every check passes, 1 otherwise; any CUDA error exits 2 at once.
//
// Launch configurations are the ones src/ops/attention.ts uses (grid, block, dynamic shared
// memory with the opt-in above 48 KiB); keep the two in step.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "../kernels/attention.cu"
#include "../kernels/attention_mma.cu"

#define CK(call)                                                                                  \
  do {                                                                                            \
    cudaError_t e_ = (call);                                                                      \
    if (e_ != cudaSuccess) {                                                                      \
      fprintf(stderr, "CUDA error %s at %s:%d: %s\n", cudaGetErrorName(e_), __FILE__, __LINE__, \
              cudaGetErrorString(e_));                                                            \
      exit(2);                                                                                    \
    }                                                                                             \
  } while (0)
#define CK_LAUNCH() CK(cudaGetLastError())

// ---- host 16-bit conversions (round to nearest even, as common.cuh and the CPU backend) ----
static u16 host_f32_to_bf16(float f) {
  u32 bits;
  memcpy(&bits, &f, 4);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0u) return (u16)((bits >> 16) | 0x40u);
  return (u16)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}
static float host_bf16_to_f32(u16 b) {
  u32 bits = ((u32)b) << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}
static u16 host_to16(float f, int dt) {
  if (dt == DT_BF16) return host_f32_to_bf16(f);
  __half h = __float2half_rn(f);
  u16 r;
  memcpy(&r, &h, 2);
  return r;
}
static float host_from16(u16 v, int dt) {
  if (dt == DT_BF16) return host_bf16_to_f32(v);
  __half h;
  memcpy(&h, &v, 2);
  return __half2float(h);
}

// ---- launch configurations (mirrors of src/ops/attention.ts) ----
// Reference kernels (attention.cu): 32x32 tiles, 128 threads, attentionSharedBytes(kernel, dmax).
static int ref_smem(int kernel, int dmax) {
  const int ld = dmax + 1, lp = 32 + 1;
  if (kernel == 0) return ((32 + 2 * 32) * ld + 32 * lp) * 4;           // fwd
  if (kernel == 1) return ((2 * 32 + 2 * 32) * ld + 2 * 32 * lp + 2 * 32) * 4;  // dkdv
  return ((2 * 32 + 2 * 32) * ld + 32 * lp) * 4;                        // dq
}
// MMA kernels (attention_mma.cu): grid [ceil(T / 64), B * H], 128 threads, FaCfg<D>::*_SMEM.
static int mma_smem(int kernel, int D) {
  if (D == 64) return kernel == 0 ? FaCfg<64>::FWD_SMEM : kernel == 1 ? FaCfg<64>::DKDV_SMEM : FaCfg<64>::DQ_SMEM;
  return kernel == 0 ? FaCfg<128>::FWD_SMEM : kernel == 1 ? FaCfg<128>::DKDV_SMEM : FaCfg<128>::DQ_SMEM;
}

typedef void (*FwdFn)(AttnTensor, AttnTensor, AttnTensor, AttnTensor, AttnTensor, int, i64, int, float);
typedef void (*DkdvFn)(AttnTensor, AttnTensor, AttnTensor, AttnTensor, AttnTensor, const float*, AttnTensor,
                       AttnTensor, int, i64, int, float);
typedef void (*DqFn)(AttnTensor, AttnTensor, AttnTensor, AttnTensor, AttnTensor, const float*, AttnTensor, int, i64,
                     int, float);

static FwdFn mma_fwd_fn(int D, int dt) {
  if (dt == DT_BF16) return D == 64 ? attn_mma_fwd_bf16_d64 : attn_mma_fwd_bf16_d128;
  return D == 64 ? attn_mma_fwd_f16_d64 : attn_mma_fwd_f16_d128;
}
static DkdvFn mma_dkdv_fn(int D, int dt) {
  if (dt == DT_BF16) return D == 64 ? attn_mma_bwd_dkdv_bf16_d64 : attn_mma_bwd_dkdv_bf16_d128;
  return D == 64 ? attn_mma_bwd_dkdv_f16_d64 : attn_mma_bwd_dkdv_f16_d128;
}
static DqFn mma_dq_fn(int D, int dt) {
  if (dt == DT_BF16) return D == 64 ? attn_mma_bwd_dq_bf16_d64 : attn_mma_bwd_dq_bf16_d128;
  return D == 64 ? attn_mma_bwd_dq_f16_d64 : attn_mma_bwd_dq_f16_d128;
}

static int g_sms = 0;

struct Problem {
  int B, H, T, D;
  bool causal;
  int dt;
  float scale;
};

static AttnTensor tensor4(void* p, const Problem& s, int dt) {
  AttnTensor t;
  t.ptr = (u64)p;
  t.sb = (i64)s.H * s.T * s.D;
  t.sh = (i64)s.T * s.D;
  t.st = s.D;
  t.dt = dt;
  t.pad = 0;
  return t;
}
static AttnTensor tensorLse(void* p, const Problem& s) {
  AttnTensor t;
  t.ptr = (u64)p;
  t.sb = (i64)s.H * s.T;
  t.sh = s.T;
  t.st = 1;
  t.dt = DT_F32;
  t.pad = 0;
  return t;
}

static void ref_forward(const Problem& s, AttnTensor q, AttnTensor k, AttnTensor v, AttnTensor o, AttnTensor lse) {
  const int dmax = s.D <= 64 ? 64 : 128;
  auto fn = dmax == 64 ? attn_fwd_d64 : attn_fwd_d128;
  const int smem = ref_smem(0, dmax);
  CK(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  dim3 grid((s.T + 31) / 32, s.B * s.H);
  fn<<<grid, 128, smem>>>(q, k, v, o, lse, s.H, s.T, s.T, s.D, s.D, s.causal ? 1 : 0, s.scale);
  CK_LAUNCH();
}

static void delta_launch(const Problem& s, AttnTensor o, AttnTensor dO, float* delta) {
  const i64 rows = (i64)s.B * s.H * s.T;
  const i64 blocks = std::max<i64>(1, std::min<i64>((rows * 32 + 255) / 256, (i64)g_sms * 32));  // gridFor
  attn_bwd_delta<<<(unsigned)blocks, 256>>>(o, dO, delta, s.H, s.T, s.D, rows);
  CK_LAUNCH();
}

static void ref_backward(const Problem& s, AttnTensor q, AttnTensor k, AttnTensor v, AttnTensor o, AttnTensor lse,
                         AttnTensor dO, float* delta, AttnTensor dq, AttnTensor dk, AttnTensor dv) {
  const int dmax = s.D <= 64 ? 64 : 128;
  const int c = s.causal ? 1 : 0;
  delta_launch(s, o, dO, delta);
  auto fkv = dmax == 64 ? attn_bwd_dkdv_d64 : attn_bwd_dkdv_d128;
  auto fq = dmax == 64 ? attn_bwd_dq_d64 : attn_bwd_dq_d128;
  const int skv = ref_smem(1, dmax), sq = ref_smem(2, dmax);
  CK(cudaFuncSetAttribute(fkv, cudaFuncAttributeMaxDynamicSharedMemorySize, skv));
  CK(cudaFuncSetAttribute(fq, cudaFuncAttributeMaxDynamicSharedMemorySize, sq));
  dim3 grid((s.T + 31) / 32, s.B * s.H);
  fkv<<<grid, 128, skv>>>(q, k, v, dO, lse, delta, dk, dv, s.H, s.T, s.T, s.D, s.D, c, s.scale);
  CK_LAUNCH();
  fq<<<grid, 128, sq>>>(q, k, v, dO, lse, delta, dq, s.H, s.T, s.T, s.D, s.D, c, s.scale);
  CK_LAUNCH();
}

static void mma_forward(const Problem& s, AttnTensor q, AttnTensor k, AttnTensor v, AttnTensor o, AttnTensor lse) {
  FwdFn fn = mma_fwd_fn(s.D, s.dt);
  const int smem = mma_smem(0, s.D);
  CK(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  dim3 grid((s.T + 63) / 64, s.B * s.H);
  fn<<<grid, FA_THREADS, smem>>>(q, k, v, o, lse, s.H, s.T, s.causal ? 1 : 0, s.scale);
  CK_LAUNCH();
}

// parts: 1 delta, 2 dK/dV, 4 dQ (a mask, to time each kernel alone).
static void mma_backward(const Problem& s, AttnTensor q, AttnTensor k, AttnTensor v, AttnTensor o, AttnTensor lse,
                         AttnTensor dO, float* delta, AttnTensor dq, AttnTensor dk, AttnTensor dv, int parts = 7) {
  const int c = s.causal ? 1 : 0;
  if (parts & 1) delta_launch(s, o, dO, delta);
  DkdvFn fkv = mma_dkdv_fn(s.D, s.dt);
  DqFn fq = mma_dq_fn(s.D, s.dt);
  const int skv = mma_smem(1, s.D), sq = mma_smem(2, s.D);
  CK(cudaFuncSetAttribute(fkv, cudaFuncAttributeMaxDynamicSharedMemorySize, skv));
  CK(cudaFuncSetAttribute(fq, cudaFuncAttributeMaxDynamicSharedMemorySize, sq));
  dim3 grid((s.T + 63) / 64, s.B * s.H);
  if (parts & 2) {
    fkv<<<grid, FA_THREADS, skv>>>(q, k, v, dO, lse, delta, dk, dv, s.H, s.T, c, s.scale);
    CK_LAUNCH();
  }
  if (parts & 4) {
    fq<<<grid, FA_THREADS, sq>>>(q, k, v, dO, lse, delta, dq, s.H, s.T, c, s.scale);
    CK_LAUNCH();
  }
}

// ---- buffers and comparison ----
template <typename T>
static T* dalloc(size_t n) {
  T* p = nullptr;
  CK(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)));
  return p;
}
template <typename T>
static void poison(T* p, size_t n) {
  CK(cudaMemset(p, 0xff, n * sizeof(T)));  // 0xffff / 0xffffffff: NaN in bf16, f16 and f32
}

static std::vector<float> download16(const u16* p, size_t n, int dt) {
  std::vector<u16> h(n);
  CK(cudaMemcpy(h.data(), p, n * 2, cudaMemcpyDeviceToHost));
  std::vector<float> f(n);
  for (size_t i = 0; i < n; i++) f[i] = host_from16(h[i], dt);
  return f;
}
static std::vector<float> download32(const float* p, size_t n) {
  std::vector<float> f(n);
  CK(cudaMemcpy(f.data(), p, n * 4, cudaMemcpyDeviceToHost));
  return f;
}

static int g_failures = 0;

static void compare(const char* shape, const char* name, const std::vector<float>& got, const std::vector<float>& ref,
                    bool isLse) {
  double maxAbs = 0, num = 0, den = 0;
  size_t bad = 0, refBad = 0;
  for (size_t i = 0; i < got.size(); i++) {
    if (!std::isfinite(ref[i])) {
      refBad++;
      continue;
    }
    if (!std::isfinite(got[i])) {
      bad++;
      continue;
    }
    const double d = (double)got[i] - (double)ref[i];
    maxAbs = std::max(maxAbs, std::fabs(d));
    num += d * d;
    den += (double)ref[i] * ref[i];
  }
  const double rel = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  const bool pass = bad == 0 && refBad == 0 && (isLse ? maxAbs < 1e-3 : rel < 1e-2);
  if (!pass) g_failures++;
  printf("%-34s %-4s max_abs %.3e  rel %.3e  nonfinite %zu (ref %zu)  %s\n", shape, name, maxAbs, rel, bad, refBad,
         pass ? "PASS" : "FAIL");
}

static void check_shape(const Problem& s, std::mt19937& rng) {
  char label[96];
  snprintf(label, sizeof label, "B%d H%d T%d D%d %s %s", s.B, s.H, s.T, s.D, s.causal ? "causal" : "full",
           s.dt == DT_BF16 ? "bf16" : "f16");
  const size_t n = (size_t)s.B * s.H * s.T * s.D, nr = (size_t)s.B * s.H * s.T;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto upload = [&](u16* dst) {
    std::vector<u16> h(n);
    for (size_t i = 0; i < n; i++) h[i] = host_to16(normal(rng), s.dt);
    CK(cudaMemcpy(dst, h.data(), n * 2, cudaMemcpyHostToDevice));
  };
  u16 *q = dalloc<u16>(n), *k = dalloc<u16>(n), *v = dalloc<u16>(n), *dO = dalloc<u16>(n), *o16 = dalloc<u16>(n);
  u16 *oM = dalloc<u16>(n), *dqM = dalloc<u16>(n), *dkM = dalloc<u16>(n), *dvM = dalloc<u16>(n);
  float *oR = dalloc<float>(n), *dqR = dalloc<float>(n), *dkR = dalloc<float>(n), *dvR = dalloc<float>(n);
  float *lseR = dalloc<float>(nr), *lseM = dalloc<float>(nr), *delta = dalloc<float>(nr);
  upload(q);
  upload(k);
  upload(v);
  upload(dO);
  const AttnTensor Q = tensor4(q, s, s.dt), K = tensor4(k, s, s.dt), V = tensor4(v, s, s.dt), DO = tensor4(dO, s, s.dt);

  // Forward.
  poison(oR, n);
  poison(lseR, nr);
  poison(oM, n);
  poison(lseM, nr);
  ref_forward(s, Q, K, V, tensor4(oR, s, DT_F32), tensorLse(lseR, s));
  mma_forward(s, Q, K, V, tensor4(oM, s, s.dt), tensorLse(lseM, s));
  CK(cudaDeviceSynchronize());
  std::vector<float> outRef = download32(oR, n);
  compare(label, "out", download16(oM, n, s.dt), outRef, false);
  compare(label, "lse", download32(lseM, nr), download32(lseR, nr), true);

  // Backward, both from the reference out (rounded to the input dtype, as the host would hold it)
  // and the reference lse, so only the backward kernels differ.
  {
    std::vector<u16> h(n);
    for (size_t i = 0; i < n; i++) h[i] = host_to16(outRef[i], s.dt);
    CK(cudaMemcpy(o16, h.data(), n * 2, cudaMemcpyHostToDevice));
  }
  const AttnTensor O16 = tensor4(o16, s, s.dt), L = tensorLse(lseR, s);
  poison(dqR, n);
  poison(dkR, n);
  poison(dvR, n);
  poison(delta, nr);
  ref_backward(s, Q, K, V, O16, L, DO, delta, tensor4(dqR, s, DT_F32), tensor4(dkR, s, DT_F32), tensor4(dvR, s, DT_F32));
  CK(cudaDeviceSynchronize());
  poison(dqM, n);
  poison(dkM, n);
  poison(dvM, n);
  poison(delta, nr);
  mma_backward(s, Q, K, V, O16, L, DO, delta, tensor4(dqM, s, s.dt), tensor4(dkM, s, s.dt), tensor4(dvM, s, s.dt));
  CK(cudaDeviceSynchronize());
  compare(label, "dq", download16(dqM, n, s.dt), download32(dqR, n), false);
  compare(label, "dk", download16(dkM, n, s.dt), download32(dkR, n), false);
  compare(label, "dv", download16(dvM, n, s.dt), download32(dvR, n), false);

  for (void* p : {(void*)q, (void*)k, (void*)v, (void*)dO, (void*)o16, (void*)oM, (void*)dqM, (void*)dkM, (void*)dvM,
                  (void*)oR, (void*)dqR, (void*)dkR, (void*)dvR, (void*)lseR, (void*)lseM, (void*)delta})
    CK(cudaFree(p));
}

template <typename F>
static double time_ms(F fn) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  for (int i = 0; i < 3; i++) fn();
  CK(cudaDeviceSynchronize());
  std::vector<float> ts;
  for (int i = 0; i < 10; i++) {
    CK(cudaEventRecord(a));
    fn();
    CK(cudaEventRecord(b));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    ts.push_back(ms);
  }
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  std::sort(ts.begin(), ts.end());
  return 0.5 * (ts[4] + ts[5]);
}

static void bench(const Problem& s, std::mt19937& rng) {
  const size_t n = (size_t)s.B * s.H * s.T * s.D, nr = (size_t)s.B * s.H * s.T;
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<u16> h(n);
  u16* buf[9];
  for (int i = 0; i < 9; i++) buf[i] = dalloc<u16>(n);
  for (int i = 0; i < 4; i++) {  // q, k, v, dO
    for (size_t j = 0; j < n; j++) h[j] = host_to16(normal(rng), s.dt);
    CK(cudaMemcpy(buf[i], h.data(), n * 2, cudaMemcpyHostToDevice));
  }
  float *lse = dalloc<float>(nr), *delta = dalloc<float>(nr);
  const AttnTensor Q = tensor4(buf[0], s, s.dt), K = tensor4(buf[1], s, s.dt), V = tensor4(buf[2], s, s.dt),
                   DO = tensor4(buf[3], s, s.dt), O = tensor4(buf[4], s, s.dt), L = tensorLse(lse, s),
                   DQ = tensor4(buf[5], s, s.dt), DK = tensor4(buf[6], s, s.dt), DV = tensor4(buf[7], s, s.dt);
  const double fwdFlops = (s.causal ? 2.0 : 4.0) * s.B * s.H * (double)s.T * s.T * s.D;
  const double allFlops = 3.5 * fwdFlops;
  // The reference times are taken with 16-bit outputs, as the TypeScript host runs it.
  ref_forward(s, Q, K, V, O, L);  // outputs for the backward-only timings
  const double rf = time_ms([&] { ref_forward(s, Q, K, V, O, L); });
  const double rb = time_ms([&] { ref_backward(s, Q, K, V, O, L, DO, delta, DQ, DK, DV); });
  const double ra = time_ms([&] {
    ref_forward(s, Q, K, V, O, L);
    ref_backward(s, Q, K, V, O, L, DO, delta, DQ, DK, DV);
  });
  mma_forward(s, Q, K, V, O, L);
  const double mf = time_ms([&] { mma_forward(s, Q, K, V, O, L); });
  const double mb = time_ms([&] { mma_backward(s, Q, K, V, O, L, DO, delta, DQ, DK, DV); });
  const double ma = time_ms([&] {
    mma_forward(s, Q, K, V, O, L);
    mma_backward(s, Q, K, V, O, L, DO, delta, DQ, DK, DV);
  });
  const double md = time_ms([&] { mma_backward(s, Q, K, V, O, L, DO, delta, DQ, DK, DV, 1); });
  const double mkv = time_ms([&] { mma_backward(s, Q, K, V, O, L, DO, delta, DQ, DK, DV, 2); });
  const double mq = time_ms([&] { mma_backward(s, Q, K, V, O, L, DO, delta, DQ, DK, DV, 4); });
  CK(cudaDeviceSynchronize());
  printf("\ntiming B%d H%d T%d D%d %s %s (median of 10 after 3 warm-ups)\n", s.B, s.H, s.T, s.D,
         s.causal ? "causal" : "full", s.dt == DT_BF16 ? "bf16" : "f16");
  auto line = [&](const char* name, double ms, double flops) {
    printf("  %-22s %8.3f ms  %7.1f TFLOP/s\n", name, ms, flops / (ms * 1e-3) / 1e12);
  };
  line("reference forward", rf, fwdFlops);
  line("reference backward", rb, allFlops - fwdFlops);
  line("reference fwd+bwd", ra, allFlops);
  line("mma forward", mf, fwdFlops);
  line("mma backward", mb, allFlops - fwdFlops);
  line("mma fwd+bwd", ma, allFlops);
  line("mma delta", md, 0);
  line("mma dK/dV", mkv, 2.0 * fwdFlops);
  line("mma dQ", mq, 1.5 * fwdFlops);
  printf("  speedup: forward %.1fx, fwd+bwd %.1fx\n", rf / mf, ra / ma);
  for (int i = 0; i < 9; i++) CK(cudaFree(buf[i]));
  CK(cudaFree(lse));
  CK(cudaFree(delta));
}

int main() {
  int dev = 0;
  CK(cudaGetDevice(&dev));
  cudaDeviceProp prop;
  CK(cudaGetDeviceProperties(&prop, dev));
  g_sms = prop.multiProcessorCount;
  printf("device %s (sm_%d%d, %d SMs, %zu bytes opt-in shared memory per block)\n", prop.name, prop.major, prop.minor,
         prop.multiProcessorCount, prop.sharedMemPerBlockOptin);
  std::mt19937 rng(20240611u);
  const Problem shapes[] = {
      {1, 2, 64, 64, true, DT_BF16, 0.0f},    {1, 2, 100, 64, false, DT_BF16, 0.0f},
      {2, 3, 200, 128, true, DT_BF16, 0.0f},  {1, 2, 100, 128, false, DT_BF16, 0.0f},
      {1, 2, 64, 64, true, DT_F16, 0.0f},     {1, 2, 100, 64, false, DT_F16, 0.0f},
      {2, 3, 200, 128, true, DT_F16, 0.0f},   {1, 1, 1, 64, true, DT_BF16, 0.0f},
      {4, 16, 1024, 128, true, DT_BF16, 0.0f},
  };
  for (Problem s : shapes) {
    s.scale = 1.0f / std::sqrt((float)s.D);
    check_shape(s, rng);
  }
  Problem b = {4, 16, 1024, 128, true, DT_BF16, 1.0f / std::sqrt(128.0f)};
  bench(b, rng);
  printf("\n%s: %d check(s) failed\n", g_failures == 0 ? "ALL PASS" : "FAIL", g_failures);
  return g_failures == 0 ? 0 : 1;
}
