/**
 * dtype facts the kernels need: the integer codes they switch on (must match DT_* in
 * kernels/common.cuh), element sizes, and when arithmetic must run in double.
 */
import type { DType } from "@fulgur/tensor";

export const DTYPE_CODE: Readonly<Record<DType, number>> = { float32: 0, float64: 1, bfloat16: 2, float16: 3, int32: 4 };

const ITEMSIZE: Readonly<Record<DType, number>> = { float32: 4, float64: 8, bfloat16: 2, float16: 2, int32: 4 };

export function itemsizeOf(dtype: DType): number {
  const s = ITEMSIZE[dtype];
  if (s === undefined) throw new TypeError(`dtype: got ${JSON.stringify(dtype)}; expected one of ${Object.keys(ITEMSIZE).join(", ")}`);
  return s;
}

/** float32 cannot hold every float64 or int32 value exactly: ops touching them compute in double. */
export function needsWide(...dtypes: DType[]): boolean {
  return dtypes.some((d) => d === "float64" || d === "int32");
}

export function isFloat16Like(dtype: DType): boolean {
  return dtype === "bfloat16" || dtype === "float16";
}
