/** Splits a batch into micro-batches along dim 0: tensors are narrowed (views), arrays and plain objects split member-wise, anything else repeated. */
import { type Tensor, isTensor } from "@fulgur/tensor";

export function splitBatch(batch: unknown, m: number): unknown[] {
  if (isTensor(batch)) {
    const t = batch as Tensor;
    const n = t.shape[0];
    if (t.ndim === 0 || n % m !== 0) {
      throw new RangeError(`pipeline: a batch of ${t.ndim === 0 ? "a scalar" : n} samples does not split into ${m} equal micro-batches; make the batch size a multiple of microBatches`);
    }
    return Array.from({ length: m }, (_, i) => t.narrow(0, (i * n) / m, n / m));
  }
  if (Array.isArray(batch)) {
    const parts = batch.map((b) => splitBatch(b, m));
    return Array.from({ length: m }, (_, i) => parts.map((p) => p[i]));
  }
  if (batch && typeof batch === "object" && Object.getPrototypeOf(batch) === Object.prototype) {
    const parts = Object.entries(batch).map(([k, v]) => [k, splitBatch(v, m)] as const);
    return Array.from({ length: m }, (_, i) => Object.fromEntries(parts.map(([k, p]) => [k, p[i]])));
  }
  return new Array(m).fill(batch);
}
