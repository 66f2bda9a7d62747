/**
 * Work started beside the calling thread, where the tensors' backend can run it elsewhere (the CPU
 * backend's worker threads), else done at the call. The sharding engine updates offloaded units,
 * and adds later micro-batches' gradients, this way while its thread drives backward on the GPU.
 * The tensors are the work's until `wait()` returns.
 */
import { type FusedAdamWCall, adamwArguments, adamwOnBackend } from "./adamwRoute";
import type { PendingWork } from "./backend";
import { noGrad } from "./gradMode";
import { DONE_WORK } from "./pendingWork";
import type { Tensor } from "./tensor";

/**
 * The fused AdamW update of `call`, beside the caller where its parameters' backend can; else run
 * at the call by `inPlace` (by default on the backend: no route applies, the caller chose where it
 * runs; a route passes its own `onBackend`).
 */
export function fusedAdamWBeside(call: FusedAdamWCall, inPlace: (call: FusedAdamWCall) => void = adamwOnBackend): PendingWork {
  if (call.params.length === 0) return DONE_WORK;
  const pending = call.params[0].backend.adamwBeside?.(...adamwArguments(call));
  if (pending) return pending;
  inPlace(call);
  return DONE_WORK;
}

/** `dst += src`, beside the caller where the backend can. */
export function addBeside(dst: Tensor, src: Tensor): PendingWork {
  const pending = dst.backend.addBeside?.(dst, src);
  if (pending) return pending;
  noGrad(() => dst.add_(src));
  return DONE_WORK;
}
