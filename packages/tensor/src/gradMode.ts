/** Whether operations record the autograd graph, and the autocast dtype for matrix products. */
import type { DType } from "./dtype";
import { restoreAfter } from "./restoreAfter";

let gradEnabled = true;
let autocastDtype: DType | null = null;

export function isGradEnabled(): boolean {
  return gradEnabled;
}

function withFlag<T>(value: boolean, fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = value;
  return restoreAfter(fn, () => {
    gradEnabled = prev;
  });
}

/** Runs fn without recording the graph (optimizer steps, evaluation). */
export function noGrad<T>(fn: () => T): T {
  return withFlag(false, fn);
}

export function enableGrad<T>(fn: () => T): T {
  return withFlag(true, fn);
}

export function setGradEnabled(value: boolean): void {
  gradEnabled = value;
}

export function autocastDType(): DType | null {
  return autocastDtype;
}

/**
 * Mixed precision: inside fn, matrix products (matmul, linear, attention) run in `dtype`, while
 * reductions, softmax, layer norm and losses run in float32, as PyTorch's autocast does.
 * Pass null to disable autocast inside an autocast region.
 */
export function autocast<T>(dtype: DType | null, fn: () => T): T {
  if (dtype !== null && dtype !== "bfloat16" && dtype !== "float16") {
    throw new TypeError(`autocast: dtype ${JSON.stringify(dtype)} is not supported; use "bfloat16", "float16" or null`);
  }
  const prev = autocastDtype;
  autocastDtype = dtype;
  return restoreAfter(fn, () => {
    autocastDtype = prev;
  });
}
