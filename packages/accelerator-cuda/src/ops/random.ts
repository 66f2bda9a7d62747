/** Host side of kernels/random.cu: Philox draws into a contiguous output (Backend.random). */
import type { PhiloxState, View } from "@fulgur/tensor";
import type { CudaBackend } from "../cudaBackend";
import { ArgPack } from "../launch";
import { THREADS, gridFor, outputRows } from "./common";
import { DTYPE_CODE } from "./dtypes";

export function random(b: CudaBackend, kind: "uniform" | "normal", out: View, state: PhiloxState): void {
  if (kind !== "uniform" && kind !== "normal") throw new TypeError(`random kind: got ${JSON.stringify(kind)}; expected "uniform" or "normal"`);
  if (typeof state.seed !== "bigint" || !Number.isSafeInteger(state.offset) || state.offset < 0) {
    throw new TypeError(`random state: expected { seed: bigint, offset: non-negative integer }, got offset ${String(state.offset)}`);
  }
  const O = outputRows(b, out);
  try {
    const n = O.rows * O.cols;
    if (n === 0) return;
    if (O.rowStride !== O.cols && O.rows > 1) throw new RangeError("random: out must be contiguous");
    const ctx = b.ctx;
    const a = ArgPack.begin()
      .ptr(O.ptr)
      .i32(DTYPE_CODE[O.dtype])
      .u64(n)
      .u64(BigInt.asUintN(64, state.seed))
      .u64(state.offset)
      .i32(kind === "uniform" ? 0 : 1);
    ctx.module("random").launch("philox_fill", gridFor(b, n), THREADS, 0, ctx.compute, a);
  } finally {
    O.finish();
  }
}
