/**
 * dtype facts the kernels need: the integer codes they switch on (must match DT_* in
 * kernels/common.cuh), element sizes, and when arithmetic must run in double.
 */
import { DTYPES, type DType, itemsize } from "@fulgur/tensor";

export const DTYPE_CODE: Readonly<Record<DType, number>> = { float32: 0, float64: 1, bfloat16: 2, float16: 3, int32: 4 };

/** tensor's `itemsize`, refusing what is not a dtype (kernel arguments come from untyped storages). */
export function itemsizeOf(dtype: DType): number {
  if (!DTYPES.includes(dtype)) throw new TypeError(`dtype: got ${JSON.stringify(dtype)}; expected one of ${DTYPES.join(", ")}`);
  return itemsize(dtype);
}

/** float32 cannot hold every float64 or int32 value exactly: ops touching them compute in double. */
export function needsWide(...dtypes: DType[]): boolean {
  return dtypes.some((d) => d === "float64" || d === "int32");
}

export function isFloat16Like(dtype: DType): boolean {
  return dtype === "bfloat16" || dtype === "float16";
}
