// elementwise.cu: copy (with cast), fill, unary, binary and where over strided N-d views (up to 8
// dims), the GPU side of Backend.copy/fill/unary/binary/where.
//
// One kernel per op family rather than per (op, dtype) pair: the op and each operand's dtype are
// runtime arguments. The switch is uniform across a warp, so it costs a few instructions per element
// on kernels that are bound by memory bandwidth anyway, and it keeps this file one screen per family
// instead of hundreds of instantiations. Arithmetic runs in float, or in double when the host asks
// (`wide`: float64 or int32 operands, where float would lose exactness).
//
// The host coalesces dims and passes `contig` when every operand is contiguous over the whole shape,
// which skips the index arithmetic entirely.
#include "common.cuh"

// Unary op codes: must match UNARY_CODE in src/ops/elementwise.ts.
#define U_NEG 0
#define U_EXP 1
#define U_LOG 2
#define U_SQRT 3
#define U_RSQRT 4
#define U_TANH 5
#define U_GELU 6
#define U_RELU 7
#define U_ABS 8
#define U_SIGMOID 9
#define U_RECIPROCAL 10
#define U_SQUARE 11
#define U_ADD_SCALAR 12
#define U_MUL_SCALAR 13
#define U_POW_SCALAR 14
#define U_RSUB_SCALAR 15

// Binary op codes: must match BINARY_CODE in src/ops/elementwise.ts.
#define B_ADD 0
#define B_SUB 1
#define B_MUL 2
#define B_DIV 3
#define B_MAXIMUM 4
#define B_MINIMUM 5
#define B_POW 6
#define B_GELU_BACKWARD 7
#define B_RELU_BACKWARD 8
#define B_EQ 9
#define B_NE 10
#define B_LT 11
#define B_LE 12
#define B_GT 13
#define B_GE 14

__device__ __forceinline__ float m_exp(float x) { return expf(x); }
__device__ __forceinline__ double m_exp(double x) { return exp(x); }
__device__ __forceinline__ float m_log(float x) { return logf(x); }
__device__ __forceinline__ double m_log(double x) { return log(x); }
__device__ __forceinline__ float m_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double m_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float m_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double m_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float m_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double m_abs(double x) { return fabs(x); }
__device__ __forceinline__ float m_pow(float x, float y) { return powf(x, y); }
__device__ __forceinline__ double m_pow(double x, double y) { return pow(x, y); }

// GELU, tanh form, the one PyTorch calls approximate="tanh" and cuBLASLt's epilogue computes.
template <typename T>
__device__ __forceinline__ T gelu_t(T x) {
  const T c = (T)0.7978845608028654, a = (T)0.044715;
  return (T)0.5 * x * ((T)1 + m_tanh(c * (x + a * x * x * x)));
}

template <typename T>
__device__ __forceinline__ T gelu_grad_t(T x) {
  const T c = (T)0.7978845608028654, a = (T)0.044715;
  T x2 = x * x;
  T t = m_tanh(c * (x + a * x2 * x));
  return (T)0.5 * ((T)1 + t) + (T)0.5 * x * ((T)1 - t * t) * c * ((T)1 + (T)3 * a * x2);
}

template <typename T>
__device__ __forceinline__ T unary_op(int op, T x, T s) {
  switch (op) {
    case U_NEG: return -x;
    case U_EXP: return m_exp(x);
    case U_LOG: return m_log(x);
    case U_SQRT: return m_sqrt(x);
    case U_RSQRT: return (T)1 / m_sqrt(x);
    case U_TANH: return m_tanh(x);
    case U_GELU: return gelu_t(x);
    case U_RELU: return (x > (T)0 || x != x) ? x : (T)0;  // NaN passes through, as in PyTorch
    case U_ABS: return m_abs(x);
    case U_SIGMOID: return (T)1 / ((T)1 + m_exp(-x));
    case U_RECIPROCAL: return (T)1 / x;
    case U_SQUARE: return x * x;
    case U_ADD_SCALAR: return x + s;
    case U_MUL_SCALAR: return x * s;
    case U_POW_SCALAR: return s == (T)2 ? x * x : m_pow(x, s);
    default: return s - x;  // U_RSUB_SCALAR
  }
}

template <typename T>
__device__ __forceinline__ T binary_op(int op, T a, T b) {
  switch (op) {
    case B_ADD: return a + b;
    case B_SUB: return a - b;
    case B_MUL: return a * b;
    case B_DIV: return a / b;
    // Math.max/min semantics: NaN if either side is NaN.
    case B_MAXIMUM: return (a != a || b != b) ? a + b : (a > b ? a : b);
    case B_MINIMUM: return (a != a || b != b) ? a + b : (a < b ? a : b);
    case B_POW: return m_pow(a, b);
    case B_GELU_BACKWARD: return b * gelu_grad_t(a);
    case B_RELU_BACKWARD: return a > (T)0 ? b : (T)0;
    case B_EQ: return a == b ? (T)1 : (T)0;
    case B_NE: return a != b ? (T)1 : (T)0;
    case B_LT: return a < b ? (T)1 : (T)0;
    case B_LE: return a <= b ? (T)1 : (T)0;
    case B_GT: return a > b ? (T)1 : (T)0;
    default: return a >= b ? (T)1 : (T)0;  // B_GE
  }
}

// dst = cast(src). Same-dtype copies move the storage words untouched (NaN payloads and 16-bit
// bit patterns survive), exactly like the CPU backend.
extern "C" __global__ void ew_copy(const void* src, int sdt, void* dst, int ddt, Shape8 shape, Strides8 ss, Strides8 ds,
                                   u64 n, int contig) {
  GRID_LOOP(i, n) {
    i64 so = (i64)i, dof = (i64)i;
    if (!contig) offsets2(i, shape, ss, ds, so, dof);
    if (sdt == ddt) {
      if (sdt == DT_F64)
        ((u64*)dst)[dof] = ((const u64*)src)[so];
      else if (sdt == DT_BF16 || sdt == DT_F16)
        ((u16*)dst)[dof] = ((const u16*)src)[so];
      else
        ((u32*)dst)[dof] = ((const u32*)src)[so];
    } else {
      store_d(dst, ddt, dof, load_d(src, sdt, so));
    }
  }
}

extern "C" __global__ void ew_fill(void* dst, int ddt, Shape8 shape, Strides8 ds, u64 n, int contig, double value) {
  GRID_LOOP(i, n) {
    i64 o = contig ? (i64)i : offset_of(i, shape, ds);
    store_d(dst, ddt, o, value);
  }
}

template <typename T>
__device__ __forceinline__ void unary_body(const void* x, int xdt, void* out, int odt, const Shape8& shape,
                                           const Strides8& xs, const Strides8& os, u64 n, int contig, int op,
                                           double scalar) {
  T s = (T)scalar;
  GRID_LOOP(i, n) {
    i64 xo = (i64)i, oo = (i64)i;
    if (!contig) offsets2(i, shape, xs, os, xo, oo);
    T v;
    load_as(x, xdt, xo, v);
    store_as(out, odt, oo, unary_op<T>(op, v, s));
  }
}

extern "C" __global__ void ew_unary(const void* x, int xdt, void* out, int odt, Shape8 shape, Strides8 xs, Strides8 os,
                                    u64 n, int contig, int op, double scalar, int wide) {
  if (wide)
    unary_body<double>(x, xdt, out, odt, shape, xs, os, n, contig, op, scalar);
  else
    unary_body<float>(x, xdt, out, odt, shape, xs, os, n, contig, op, scalar);
}

template <typename T>
__device__ __forceinline__ void binary_body(const void* a, int adt, const void* b, int bdt, void* out, int odt,
                                            const Shape8& shape, const Strides8& as, const Strides8& bs,
                                            const Strides8& os, u64 n, int contig, int op) {
  GRID_LOOP(i, n) {
    i64 ao = (i64)i, bo = (i64)i, oo = (i64)i;
    if (!contig) {
      offsets2(i, shape, as, bs, ao, bo);
      oo = offset_of(i, shape, os);
    }
    T va, vb;
    load_as(a, adt, ao, va);
    load_as(b, bdt, bo, vb);
    store_as(out, odt, oo, binary_op<T>(op, va, vb));
  }
}

extern "C" __global__ void ew_binary(const void* a, int adt, const void* b, int bdt, void* out, int odt, Shape8 shape,
                                     Strides8 as, Strides8 bs, Strides8 os, u64 n, int contig, int op, int wide) {
  if (wide)
    binary_body<double>(a, adt, b, bdt, out, odt, shape, as, bs, os, n, contig, op);
  else
    binary_body<float>(a, adt, b, bdt, out, odt, shape, as, bs, os, n, contig, op);
}

// out = cond != 0 ? a : b. Pure selection: values go through double, which holds every dtype exactly.
extern "C" __global__ void ew_where(const void* c, int cdt, const void* a, int adt, const void* b, int bdt, void* out,
                                    int odt, Shape8 shape, Strides8 cs, Strides8 as, Strides8 bs, Strides8 os, u64 n,
                                    int contig) {
  GRID_LOOP(i, n) {
    i64 co = (i64)i, ao = (i64)i, bo = (i64)i, oo = (i64)i;
    if (!contig) {
      offsets2(i, shape, cs, as, co, ao);
      offsets2(i, shape, bs, os, bo, oo);
    }
    double v = load_d(c, cdt, co) != 0.0 ? load_d(a, adt, ao) : load_d(b, bdt, bo);
    store_d(out, odt, oo, v);
  }
}

// ---- Fast paths ----------------------------------------------------------------------------
//
// The kernels above pay for generality on every element: a runtime dtype switch per load and store
// and, for strided views, a div/mod chain per dim. The common layouts get their own kernels (the
// host picks them, see planElementwise in src/ops/elementwise.ts):
// - *_flat: every operand contiguous over the same shape. A grid-stride loop over groups of VEC (8)
//   elements, each loaded and stored in 16-byte accesses when every pointer is 16-byte aligned
//   (`vec`), then a scalar tail; with `vec` 0 the same loop runs one element at a time. The op and
//   dtype switches sit outside the per-element work, so the memory system sees wide, coalesced
//   requests with several in flight per thread.
// - ew_binary_rowbc: a [R, C] operand against a row vector [C] (bias add, scaling rows): a 2-D grid
//   (blocks over columns x rows) so no element needs a division; the row vector stays in L1/L2.
// - ew_transpose: a 2-D (optionally batched) transposing copy through a 32x32 shared tile, so both
//   the reads and the writes are coalesced.
// Every path converts with load8/store8 or load_d/store_d, the same rules as the generic kernels:
// results are bit-identical whichever kernel runs.

// dst = cast(src), both contiguous. Same-dtype copies move raw words (the host sends those to
// cudaMemcpyAsync, but the kernel stays correct for them).
template <typename T>
__device__ __forceinline__ void copy_flat_body(const void* src, int sdt, void* dst, int ddt, u64 n, int vec) {
  u64 head = 0;
  if (vec) {
    const u64 nv = n / VEC;
    GRID_LOOP(v, nv) {
      T x[VEC];
      load8(src, sdt, v * VEC, x);
      store8(dst, ddt, v * VEC, x);
    }
    head = nv * VEC;
  }
  GRID_LOOP(j, n - head) {
    T x;
    load_as(src, sdt, (i64)(head + j), x);
    store_as(dst, ddt, (i64)(head + j), x);
  }
}

extern "C" __global__ void __launch_bounds__(256, 4) ew_copy_flat(const void* src, int sdt, void* dst, int ddt, u64 n, int vec,
                                                                  int wide) {
  if (sdt == ddt) {
    // Raw words: NaN payloads and 16-bit patterns survive, as in ew_copy.
    const int size = sdt == DT_F64 ? 8 : (sdt == DT_BF16 || sdt == DT_F16 ? 2 : 4);
    u64 head = 0;
    if (vec) {
      const u64 nw = n * size / 16;
      GRID_LOOP(w, nw) ((W16*)dst)[w] = ((const W16*)src)[w];
      head = nw * 16 / size;
    }
    GRID_LOOP(j, n - head) {
      const u64 k = head + j;
      if (size == 8)
        ((u64*)dst)[k] = ((const u64*)src)[k];
      else if (size == 2)
        ((u16*)dst)[k] = ((const u16*)src)[k];
      else
        ((u32*)dst)[k] = ((const u32*)src)[k];
    }
    return;
  }
  // Through float when neither side is float64 or int32: float holds every bf16/f16/f32 value, so
  // the result is the same as going through double (ew_copy), only cheaper. The host sends the
  // others to ew_copy_flat_wide.
  copy_flat_body<float>(src, sdt, dst, ddt, n, vec);
}

// The *_wide kernels are the float64 / int32 halves of the flat kernels, split off so the float
// kernels' register count (and so their occupancy) is not set by double-precision code they never
// run: with both in one kernel ew_binary_flat took 92 registers a thread and kept 22% of the warps
// an SM can hold busy, about half the DRAM bandwidth a copy gets.
extern "C" __global__ void ew_copy_flat_wide(const void* src, int sdt, void* dst, int ddt, u64 n, int vec, int wide) {
  copy_flat_body<double>(src, sdt, dst, ddt, n, vec);
}

// Fill a contiguous buffer: the stored word is computed once and written as a 16-byte pattern.
extern "C" __global__ void ew_fill_flat(void* dst, int ddt, u64 n, int vec, double value) {
  u64 head = 0;
  if (vec) {
    W16 pat;
    if (ddt == DT_F64) {
      u64 x = (u64)__double_as_longlong(value);
      pat.w[0] = pat.w[2] = (u32)x;
      pat.w[1] = pat.w[3] = (u32)(x >> 32);
    } else {
      u32 word;
      if (ddt == DT_BF16)
        word = f32_to_bf16((float)value) * 0x10001u;
      else if (ddt == DT_F16)
        word = f32_to_f16((float)value) * 0x10001u;
      else if (ddt == DT_F32)
        word = __float_as_uint((float)value);
      else
        word = (u32)to_i32(value);
      pat.w[0] = pat.w[1] = pat.w[2] = pat.w[3] = word;
    }
    const int size = ddt == DT_F64 ? 8 : (ddt == DT_BF16 || ddt == DT_F16 ? 2 : 4);
    const u64 nw = n * size / 16;
    GRID_LOOP(w, nw) ((W16*)dst)[w] = pat;
    head = nw * 16 / size;
  }
  GRID_LOOP(j, n - head) store_d(dst, ddt, (i64)(head + j), value);
}

template <typename T>
__device__ __forceinline__ void unary_flat_body(const void* x, int xdt, void* out, int odt, u64 n, int op, double scalar,
                                                int vec) {
  const T s = (T)scalar;
  u64 head = 0;
  if (vec) {
    const u64 nv = n / VEC;
    GRID_LOOP(v, nv) {
      T a[VEC];
      load8(x, xdt, v * VEC, a);
#pragma unroll
      for (int k = 0; k < VEC; k++) a[k] = unary_op<T>(op, a[k], s);
      store8(out, odt, v * VEC, a);
    }
    head = nv * VEC;
  }
  GRID_LOOP(j, n - head) {
    T a;
    load_as(x, xdt, (i64)(head + j), a);
    store_as(out, odt, (i64)(head + j), unary_op<T>(op, a, s));
  }
}

extern "C" __global__ void __launch_bounds__(256, 4) ew_unary_flat(const void* x, int xdt, void* out, int odt, u64 n, int op,
                                                                   double scalar, int wide, int vec) {
  unary_flat_body<float>(x, xdt, out, odt, n, op, scalar, vec);
}

extern "C" __global__ void ew_unary_flat_wide(const void* x, int xdt, void* out, int odt, u64 n, int op, double scalar,
                                              int wide, int vec) {
  unary_flat_body<double>(x, xdt, out, odt, n, op, scalar, vec);
}

// OPC >= 0 fixes the op at compile time (the switch in binary_op folds away); -1 reads `op`.
template <typename T, int OPC = -1>
__device__ __forceinline__ void binary_flat_body(const void* a, int adt, const void* b, int bdt, void* out, int odt, u64 n,
                                                 int op_, int vec) {
  const int op = OPC >= 0 ? OPC : op_;
  u64 head = 0;
  if (vec) {
    const u64 nv = n / VEC;
    GRID_LOOP(v, nv) {
      T x[VEC], y[VEC];
      load8(a, adt, v * VEC, x);
      load8(b, bdt, v * VEC, y);
#pragma unroll
      for (int k = 0; k < VEC; k++) x[k] = binary_op<T>(op, x[k], y[k]);
      store8(out, odt, v * VEC, x);
    }
    head = nv * VEC;
  }
  GRID_LOOP(j, n - head) {
    T x, y;
    load_as(a, adt, (i64)(head + j), x);
    load_as(b, bdt, (i64)(head + j), y);
    store_as(out, odt, (i64)(head + j), binary_op<T>(op, x, y));
  }
}

// The ops a training step runs most (residual adds, gradient sums, scaling) get their own loops.
extern "C" __global__ void __launch_bounds__(256, 4) ew_binary_flat(const void* a, int adt, const void* b, int bdt, void* out,
                                                                    int odt, u64 n, int op, int wide, int vec) {
  switch (op) {
    case B_ADD: binary_flat_body<float, B_ADD>(a, adt, b, bdt, out, odt, n, op, vec); break;
    case B_SUB: binary_flat_body<float, B_SUB>(a, adt, b, bdt, out, odt, n, op, vec); break;
    case B_MUL: binary_flat_body<float, B_MUL>(a, adt, b, bdt, out, odt, n, op, vec); break;
    default: binary_flat_body<float>(a, adt, b, bdt, out, odt, n, op, vec); break;
  }
}

extern "C" __global__ void ew_binary_flat_wide(const void* a, int adt, const void* b, int bdt, void* out, int odt, u64 n,
                                               int op, int wide, int vec) {
  binary_flat_body<double>(a, adt, b, bdt, out, odt, n, op, vec);
}

// out[r, c] = op(full[r, c], row[c]) (or op(row[c], full[r, c]) when `rowIsA`). `full` and `out`
// have row stride `ld` (elements); with `vec` C and ld are multiples of 8 and every pointer 16-byte
// aligned, so each 8-column group is one aligned 16-byte access per 16 bytes of data.
template <typename T>
__device__ __forceinline__ void binary_rowbc_body(const void* full, int fdt, const void* row, int rdt, void* out, int odt,
                                                  u64 R, u64 C, u64 ld, int op, int rowIsA, int vec) {
  const u64 groups = vec ? C / VEC : C;
  for (u64 r = blockIdx.y; r < R; r += gridDim.y) {
    for (u64 g = (u64)blockIdx.x * blockDim.x + threadIdx.x; g < groups; g += (u64)gridDim.x * blockDim.x) {
      if (vec) {
        T x[VEC], y[VEC];
        load8(full, fdt, r * ld + g * VEC, x);
        load8(row, rdt, g * VEC, y);
#pragma unroll
        for (int k = 0; k < VEC; k++) x[k] = rowIsA ? binary_op<T>(op, y[k], x[k]) : binary_op<T>(op, x[k], y[k]);
        store8(out, odt, r * ld + g * VEC, x);
      } else {
        T x, y;
        load_as(full, fdt, (i64)(r * ld + g), x);
        load_as(row, rdt, (i64)g, y);
        store_as(out, odt, (i64)(r * ld + g), rowIsA ? binary_op<T>(op, y, x) : binary_op<T>(op, x, y));
      }
    }
  }
}

extern "C" __global__ void ew_binary_rowbc(const void* full, int fdt, const void* row, int rdt, void* out, int odt, u64 R,
                                           u64 C, u64 ld, int op, int rowIsA, int wide, int vec) {
  if (wide)
    binary_rowbc_body<double>(full, fdt, row, rdt, out, odt, R, C, ld, op, rowIsA, vec);
  else
    binary_rowbc_body<float>(full, fdt, row, rdt, out, odt, R, C, ld, op, rowIsA, vec);
}

// out = cond != 0 ? a : b over contiguous operands; values through double as in ew_where.
extern "C" __global__ void ew_where_flat(const void* c, int cdt, const void* a, int adt, const void* b, int bdt, void* out,
                                         int odt, u64 n, int vec) {
  u64 head = 0;
  if (vec) {
    const u64 nv = n / VEC;
    GRID_LOOP(v, nv) {
      double m[VEC], x[VEC], y[VEC];
      load8(c, cdt, v * VEC, m);
      load8(a, adt, v * VEC, x);
      load8(b, bdt, v * VEC, y);
#pragma unroll
      for (int k = 0; k < VEC; k++) x[k] = m[k] != 0.0 ? x[k] : y[k];
      store8(out, odt, v * VEC, x);
    }
    head = nv * VEC;
  }
  GRID_LOOP(j, n - head) {
    const i64 k = (i64)(head + j);
    store_d(out, odt, k, load_d(c, cdt, k) != 0.0 ? load_d(a, adt, k) : load_d(b, bdt, k));
  }
}

// Transposing copy: element (i, j) of an A x B plane sits at src[i + j * ls] and dst[i * ld + j]
// (src contiguous along i, dst along j), plane p at src + p * sb and dst + p * db. A 32x32 tile goes
// through shared memory so the warp reads 32 consecutive i and writes 32 consecutive j. The tile
// holds 64-bit words (raw storage words for a same-dtype copy, else the value as a double, which
// holds every dtype exactly); the +1 column of padding puts a warp's column reads of 8-byte words
// in distinct banks. Block: 32 x 8 threads, each moving 4 elements.
#define TILE 32
extern "C" __global__ void ew_transpose(const void* src, int sdt, void* dst, int ddt, i64 A, i64 B, i64 ls, i64 ld, i64 sb,
                                        i64 db) {
  __shared__ u64 tile[TILE][TILE + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const i64 i0 = (i64)blockIdx.x * TILE, j0 = (i64)blockIdx.y * TILE;
  const bool raw = sdt == ddt;
  const int size = sdt == DT_F64 ? 8 : (sdt == DT_BF16 || sdt == DT_F16 ? 2 : 4);
  const i64 sbase = (i64)blockIdx.z * sb, dbase = (i64)blockIdx.z * db;
#pragma unroll
  for (int k = 0; k < TILE; k += 8) {
    const i64 i = i0 + tx, j = j0 + ty + k;
    if (i < A && j < B) {
      const i64 o = sbase + i + j * ls;
      u64 w;
      if (!raw)
        w = (u64)__double_as_longlong(load_d(src, sdt, o));
      else if (size == 8)
        w = ((const u64*)src)[o];
      else if (size == 2)
        w = ((const u16*)src)[o];
      else
        w = ((const u32*)src)[o];
      tile[ty + k][tx] = w;
    }
  }
  __syncthreads();
#pragma unroll
  for (int k = 0; k < TILE; k += 8) {
    const i64 i = i0 + ty + k, j = j0 + tx;
    if (i < A && j < B) {
      const i64 o = dbase + i * ld + j;
      const u64 w = tile[tx][ty + k];
      if (!raw)
        store_d(dst, ddt, o, __longlong_as_double((i64)w));
      else if (size == 8)
        ((u64*)dst)[o] = w;
      else if (size == 2)
        ((u16*)dst)[o] = (u16)w;
      else
        ((u32*)dst)[o] = (u32)w;
    }
  }
}
