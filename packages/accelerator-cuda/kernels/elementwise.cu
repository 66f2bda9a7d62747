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
