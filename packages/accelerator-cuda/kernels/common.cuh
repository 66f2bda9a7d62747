// common.cuh: what every Fulgur kernel file shares: dtype codes, 16-bit float conversions, typed
// loads and stores, strided index arithmetic, block reductions and the device error flag.
//
// Why no #include at all: NVRTC compiles these files with nothing but their source on machines
// that have only the CUDA runtime libraries (no toolkit headers), so everything here is built from
// compiler built-ins. bfloat16 and float16 are stored as raw 16-bit words (as the CPU backend
// stores them) and converted here: bf16 with the same round-to-nearest-even bit rule as
// packages/tensor/src/dtype.ts, so the two backends round identically; f16 with the PTX cvt
// instruction, which rounds to nearest even as the CPU encoder does.
//
// The dtype codes must match DTYPE_CODE in src/ops/dtypes.ts.
#pragma once

#define DT_F32 0
#define DT_F64 1
#define DT_BF16 2
#define DT_F16 3
#define DT_I32 4

#define MAX_DIMS 8

typedef unsigned short u16;
typedef unsigned int u32;
typedef long long i64;
typedef unsigned long long u64;

// A shape of up to MAX_DIMS dims shared by all operands of an elementwise op, and the strides of
// one operand over it (in elements; 0 on broadcast dims). The host coalesces dims before launch,
// so most launches see ndim 1 or 2. Passed by value: the layout must match src/launch.ts.
struct Shape8 {
  i64 d[MAX_DIMS];
  int ndim;
  int pad;
};
struct Strides8 {
  i64 s[MAX_DIMS];
};

__device__ __forceinline__ float bf16_to_f32(u16 b) { return __uint_as_float(((u32)b) << 16); }

__device__ __forceinline__ u16 f32_to_bf16(float f) {
  u32 bits = __float_as_uint(f);
  if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0u) return (u16)((bits >> 16) | 0x40u);
  return (u16)((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

__device__ __forceinline__ float f16_to_f32(u16 h) {
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
  return f;
}

__device__ __forceinline__ u16 f32_to_f16(float f) {
  u16 h;
  asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
  return h;
}

// JavaScript's Int32Array store (ToInt32): NaN and infinities become 0, other values truncate
// toward zero and wrap modulo 2^32. The CPU backend stores int32 this way, so the GPU does too.
__device__ __forceinline__ int to_i32(double v) {
  if (v != v || v == __longlong_as_double(0x7ff0000000000000ll) || v == __longlong_as_double(0xfff0000000000000ll))
    return 0;
  double t = trunc(v);
  if (t >= -9.2e18 && t <= 9.2e18) return (int)(u32)(u64)(i64)t;
  return (int)(u32)(u64)(i64)fmod(t, 4294967296.0);
}

__device__ __forceinline__ double load_d(const void* p, int dt, i64 i) {
  switch (dt) {
    case DT_F32: return (double)((const float*)p)[i];
    case DT_F64: return ((const double*)p)[i];
    case DT_BF16: return (double)bf16_to_f32(((const u16*)p)[i]);
    case DT_F16: return (double)f16_to_f32(((const u16*)p)[i]);
    default: return (double)((const int*)p)[i];
  }
}

__device__ __forceinline__ float load_f(const void* p, int dt, i64 i) {
  switch (dt) {
    case DT_F32: return ((const float*)p)[i];
    case DT_F64: return (float)((const double*)p)[i];
    case DT_BF16: return bf16_to_f32(((const u16*)p)[i]);
    case DT_F16: return f16_to_f32(((const u16*)p)[i]);
    default: return (float)((const int*)p)[i];
  }
}

__device__ __forceinline__ void store_d(void* p, int dt, i64 i, double v) {
  switch (dt) {
    case DT_F32: ((float*)p)[i] = (float)v; break;
    case DT_F64: ((double*)p)[i] = v; break;
    // 16-bit floats round through float32 first, exactly as the CPU encoder does.
    case DT_BF16: ((u16*)p)[i] = f32_to_bf16((float)v); break;
    case DT_F16: ((u16*)p)[i] = f32_to_f16((float)v); break;
    default: ((int*)p)[i] = to_i32(v); break;
  }
}

__device__ __forceinline__ void store_f(void* p, int dt, i64 i, float v) {
  switch (dt) {
    case DT_F32: ((float*)p)[i] = v; break;
    case DT_F64: ((double*)p)[i] = (double)v; break;
    case DT_BF16: ((u16*)p)[i] = f32_to_bf16(v); break;
    case DT_F16: ((u16*)p)[i] = f32_to_f16(v); break;
    default: ((int*)p)[i] = to_i32((double)v); break;
  }
}

// Typed load/store overloads so templates over the compute type (float or double) read naturally.
__device__ __forceinline__ void load_as(const void* p, int dt, i64 i, float& out) { out = load_f(p, dt, i); }
__device__ __forceinline__ void load_as(const void* p, int dt, i64 i, double& out) { out = load_d(p, dt, i); }
__device__ __forceinline__ void store_as(void* p, int dt, i64 i, float v) { store_f(p, dt, i, v); }
__device__ __forceinline__ void store_as(void* p, int dt, i64 i, double v) { store_d(p, dt, i, v); }

// Element offset of linear index `i` (row-major over `shape`) in an operand with strides `st`.
// The loop is unrolled over MAX_DIMS with a guard so every array index is a compile-time constant:
// a dynamic index into a by-value kernel parameter would copy the whole struct to local memory.
__device__ __forceinline__ i64 offset_of(u64 i, const Shape8& shape, const Strides8& st) {
  i64 off = 0;
#pragma unroll
  for (int d = MAX_DIMS - 1; d >= 0; d--) {
    if (d < shape.ndim) {
      u64 n = (u64)shape.d[d];
      u64 q = i / n;
      off += (i64)(i - q * n) * st.s[d];
      i = q;
    }
  }
  return off;
}

// Offsets of linear index `i` in two operands at once (one division chain for both).
__device__ __forceinline__ void offsets2(u64 i, const Shape8& shape, const Strides8& a, const Strides8& b, i64& oa,
                                         i64& ob) {
  oa = 0;
  ob = 0;
#pragma unroll
  for (int d = MAX_DIMS - 1; d >= 0; d--) {
    if (d < shape.ndim) {
      u64 n = (u64)shape.d[d];
      u64 q = i / n;
      i64 r = (i64)(i - q * n);
      oa += r * a.s[d];
      ob += r * b.s[d];
      i = q;
    }
  }
}

__device__ __forceinline__ float f_nan() { return __int_as_float(0x7fffffff); }
__device__ __forceinline__ float f_inf() { return __int_as_float(0x7f800000); }
__device__ __forceinline__ double d_nan() { return __longlong_as_double(0x7ff8000000000000ll); }
__device__ __forceinline__ double d_inf() { return __longlong_as_double(0x7ff0000000000000ll); }

// Sum over a block of `blockDim.x` threads (a multiple of 32, at most 1024). `scratch` must hold
// 32 values; every thread gets the total. Callers that reuse scratch must __syncthreads() between.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : (T)0;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

template <typename T>
__device__ __forceinline__ T block_max(T v, T* scratch) {
  for (int o = 16; o > 0; o >>= 1) {
    T w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : scratch[0];
  for (int o = 16; o > 0; o >>= 1) {
    T w = __shfl_xor_sync(0xffffffffu, v, o);
    v = w > v ? w : v;
  }
  return v;
}

// The device error flag: a kernel that meets bad data (an id or target out of range) cannot throw,
// so it records the first failure here (code, value, row, limit) and the host raises it, with these
// numbers, at the next synchronisation. Codes must match src/deviceStatus.ts.
#define STATUS_EMBEDDING_ID 1
#define STATUS_CE_TARGET 2

__device__ __forceinline__ void report_status(int* status, int code, int value, long long row, long long limit) {
  if (status == 0) return;
  if (atomicCAS(status, 0, code) == 0) {
    status[1] = value;
    status[2] = (int)row;
    status[3] = (int)limit;
  }
}

// Grid-stride loop over [0, n).
#define GRID_LOOP(i, n) for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < (u64)(n); i += (u64)gridDim.x * blockDim.x)

// Eight consecutive elements at element index i (a multiple of 8) of a 16-byte aligned buffer, in
// 16-byte accesses (one for 16-bit dtypes, two for 32-bit, four for float64). The conversions are
// exactly load_as's / store_as's, so a vectorised kernel computes bit-identical results to the
// one-element-at-a-time path it replaces. W16 is a raw 16-byte word (no toolkit headers, so no
// uint4); its alignas lets the compiler emit one 128-bit access.
#define VEC 8

struct alignas(16) W16 {
  u32 w[4];
};

__device__ __forceinline__ double dbl_of(u32 lo, u32 hi) { return __longlong_as_double((i64)(((u64)hi << 32) | lo)); }

template <typename T>
__device__ __forceinline__ void load8(const void* p, int dt, u64 i, T (&v)[VEC]) {
  if (dt == DT_BF16 || dt == DT_F16) {
    W16 a = *((const W16*)((const u16*)p + i));
#pragma unroll
    for (int k = 0; k < 4; k++) {
      u16 lo = (u16)(a.w[k] & 0xffffu), hi = (u16)(a.w[k] >> 16);
      v[2 * k] = (T)(dt == DT_BF16 ? bf16_to_f32(lo) : f16_to_f32(lo));
      v[2 * k + 1] = (T)(dt == DT_BF16 ? bf16_to_f32(hi) : f16_to_f32(hi));
    }
  } else if (dt == DT_F64) {
    const W16* q = (const W16*)((const double*)p + i);
#pragma unroll
    for (int k = 0; k < 4; k++) {
      W16 a = q[k];
      v[2 * k] = (T)dbl_of(a.w[0], a.w[1]);
      v[2 * k + 1] = (T)dbl_of(a.w[2], a.w[3]);
    }
  } else {
    const W16* q = (const W16*)((const u32*)p + i);
#pragma unroll
    for (int k = 0; k < 2; k++) {
      W16 a = q[k];
#pragma unroll
      for (int j = 0; j < 4; j++) v[4 * k + j] = dt == DT_F32 ? (T)__uint_as_float(a.w[j]) : (T)(int)a.w[j];
    }
  }
}

template <typename T>
__device__ __forceinline__ void store8(void* p, int dt, u64 i, const T (&v)[VEC]) {
  if (dt == DT_BF16 || dt == DT_F16) {
    W16 a;
#pragma unroll
    for (int k = 0; k < 4; k++) {
      // 16-bit floats round through float32 first, exactly as store_d / the CPU encoder do.
      float lo = (float)v[2 * k], hi = (float)v[2 * k + 1];
      u32 l = dt == DT_BF16 ? f32_to_bf16(lo) : f32_to_f16(lo);
      u32 h = dt == DT_BF16 ? f32_to_bf16(hi) : f32_to_f16(hi);
      a.w[k] = l | (h << 16);
    }
    *((W16*)((u16*)p + i)) = a;
  } else if (dt == DT_F64) {
    W16* q = (W16*)((double*)p + i);
#pragma unroll
    for (int k = 0; k < 4; k++) {
      u64 x = (u64)__double_as_longlong((double)v[2 * k]), y = (u64)__double_as_longlong((double)v[2 * k + 1]);
      W16 a;
      a.w[0] = (u32)x;
      a.w[1] = (u32)(x >> 32);
      a.w[2] = (u32)y;
      a.w[3] = (u32)(y >> 32);
      q[k] = a;
    }
  } else {
    W16* q = (W16*)((u32*)p + i);
#pragma unroll
    for (int k = 0; k < 2; k++) {
      W16 a;
#pragma unroll
      for (int j = 0; j < 4; j++)
        a.w[j] = dt == DT_F32 ? __float_as_uint((float)v[4 * k + j]) : (u32)to_i32((double)v[4 * k + j]);
      q[k] = a;
    }
  }
}
