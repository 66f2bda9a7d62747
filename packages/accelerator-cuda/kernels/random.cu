// random.cu: uniform and normal draws from the Philox4x32-10 counter stream (Backend.random).
//
// The scheme is specified bit for bit by the CPU backend (packages/tensor/src/cpu/random.ts) so a
// seed gives the same tensor on every device and a draw can be replayed for recomputation:
//   element i uses counter (offset + i) split into two 32-bit words [lo, hi, 0, 0] and the 64-bit
//   seed as the key [lo, hi]; ten rounds with the standard multipliers and Weyl key increments;
//   uniform = (x0 >> 8) * 2^-24;
//   normal  = sqrt(-2 ln u1) * cos(2 pi u2), u1 = ((x0 >> 8) + 1) * 2^-24, u2 = (x1 >> 8) * 2^-24.
// The Box-Muller step runs in double, as the CPU computes it, and is rounded once on store, so
// float32 and 16-bit results match the CPU's exactly except where the two libraries' double
// cos/log differ in the last bit and that bit decides a rounding (tests allow 1e-6 relative).
#include "common.cuh"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

__device__ __forceinline__ void philox4x32_10(u32 c[4], u32 k0, u32 k1) {
#pragma unroll
  for (int round = 0; round < 10; round++) {
    if (round > 0) {
      k0 += PHILOX_W0;
      k1 += PHILOX_W1;
    }
    u32 hi0 = __umulhi(PHILOX_M0, c[0]), lo0 = PHILOX_M0 * c[0];
    u32 hi1 = __umulhi(PHILOX_M1, c[2]), lo1 = PHILOX_M1 * c[2];
    u32 n0 = hi1 ^ c[1] ^ k0, n2 = hi0 ^ c[3] ^ k1;
    c[0] = n0;
    c[1] = lo1;
    c[2] = n2;
    c[3] = lo0;
  }
}

// kind 0: uniform [0, 1); kind 1: standard normal. out is contiguous with n elements.
extern "C" __global__ void philox_fill(void* out, int odt, u64 n, u64 seed, u64 offset, int kind) {
  const u32 k0 = (u32)seed, k1 = (u32)(seed >> 32);
  GRID_LOOP(i, n) {
    u64 ctr = offset + i;
    u32 c[4] = {(u32)ctr, (u32)(ctr >> 32), 0u, 0u};
    philox4x32_10(c, k0, k1);
    double v;
    if (kind == 0) {
      v = (double)(c[0] >> 8) * (1.0 / 16777216.0);
    } else {
      double u1 = (double)((c[0] >> 8) + 1u) * (1.0 / 16777216.0);
      double u2 = (double)(c[1] >> 8) * (1.0 / 16777216.0);
      // cospi(2 u2) is cos(2 pi u2) without the argument reduction that cos needs for large inputs
      // (its slow path spills to local memory); the two agree to within an ulp of a double.
      v = sqrt(-2.0 * log(u1)) * cospi(2.0 * u2);
    }
    store_d(out, odt, (i64)i, v);
  }
}

// Known-answer hook for tests: writes the four output words for counter [c0..c3] under key [k0, k1].
extern "C" __global__ void philox_block(u32* out, u32 c0, u32 c1, u32 c2, u32 c3, u32 k0, u32 k1) {
  if (blockIdx.x == 0 && threadIdx.x == 0) {
    u32 c[4] = {c0, c1, c2, c3};
    philox4x32_10(c, k0, k1);
    out[0] = c[0];
    out[1] = c[1];
    out[2] = c[2];
    out[3] = c[3];
  }
}
