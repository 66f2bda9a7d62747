// embedding.cu: row gather (Backend.embedding) and row scatter-add (Backend.embeddingBackward).
//
// One thread per output element; neighbouring threads take neighbouring columns of a row, so both
// the gather and the scatter touch memory contiguously. An id outside [0, rows) cannot throw on the
// device: the kernel writes zeros for that row and records the id in the device error flag, which
// the host raises with the id and row at its next synchronisation.
//
// The backward adds with atomics because many rows can hit the same id (a repeated token). Float
// atomics make the summation order, and so the last bits, vary between runs when ids repeat; this
// is the same trade PyTorch makes for its CUDA embedding backward. 16-bit gradients are added with
// a compare-and-swap on the enclosing 32-bit word.
#include "common.cuh"

extern "C" __global__ void embedding_fwd(const void* weight, int wdt, i64 wRow, i64 wCol, const int* ids, i64 idStride,
                                         void* out, int odt, i64 oRow, i64 n, i64 dim, i64 vocab, int* status) {
  GRID_LOOP(e, (u64)(n * dim)) {
    i64 i = (i64)e / dim, j = (i64)e - i * dim;
    int id = ids[i * idStride];
    if (id < 0 || (i64)id >= vocab) {
      if (j == 0) report_status(status, STATUS_EMBEDDING_ID, id, i, vocab);
      store_d(out, odt, i * oRow + j, 0.0);
    } else if (wdt == odt && (wdt == DT_BF16 || wdt == DT_F16)) {
      ((u16*)out)[i * oRow + j] = ((const u16*)weight)[(i64)id * wRow + j * wCol];
    } else {
      store_d(out, odt, i * oRow + j, load_d(weight, wdt, (i64)id * wRow + j * wCol));
    }
  }
}

// Adds v to the 16-bit float at p (bf16 or f16) with a CAS loop on the aligned 32-bit word holding it.
__device__ void atomic_add_16(u16* p, int dt, float v) {
  u32* word = (u32*)((u64)p & ~(u64)3);
  bool high = ((u64)p & 2) != 0;
  u32 old = *word, assumed;
  do {
    assumed = old;
    u16 cur = high ? (u16)(assumed >> 16) : (u16)(assumed & 0xffffu);
    float f = (dt == DT_BF16 ? bf16_to_f32(cur) : f16_to_f32(cur)) + v;
    u16 nb = dt == DT_BF16 ? f32_to_bf16(f) : f32_to_f16(f);
    u32 next = high ? ((assumed & 0x0000ffffu) | ((u32)nb << 16)) : ((assumed & 0xffff0000u) | (u32)nb);
    old = atomicCAS(word, assumed, next);
  } while (old != assumed);
}

extern "C" __global__ void embedding_bwd(const void* gy, int gydt, i64 gyRow, i64 gyCol, const int* ids, i64 idStride,
                                         void* gw, int gwdt, i64 gwRow, i64 gwCol, i64 n, i64 dim, i64 vocab,
                                         int* status) {
  GRID_LOOP(e, (u64)(n * dim)) {
    i64 i = (i64)e / dim, j = (i64)e - i * dim;
    int id = ids[i * idStride];
    if (id < 0 || (i64)id >= vocab) {
      if (j == 0) report_status(status, STATUS_EMBEDDING_ID, id, i, vocab);
      continue;
    }
    i64 o = (i64)id * gwRow + j * gwCol;
    double g = load_d(gy, gydt, i * gyRow + j * gyCol);
    switch (gwdt) {
      case DT_F32: atomicAdd((float*)gw + o, (float)g); break;
      case DT_F64: atomicAdd((double*)gw + o, g); break;
      case DT_BF16:
      case DT_F16: atomic_add_16((u16*)gw + o, gwdt, (float)g); break;
      default: atomicAdd((int*)gw + o, to_i32(g)); break;
    }
  }
}
