/**
 * Where a fused AdamW update runs. An optimizer hands its fused step to `fusedAdamW`, which calls
 * the parameters' backend, unless a route is installed (`routeAdamW`): then the route may run part
 * of the update elsewhere and the rest on the backend. The sharding engine's offloaded step routes
 * part of the host-resident state through the GPU ([Note: the step streamed through the device] in
 * @fulgur/sharding), while the optimizer keeps the formulas, the hyper-parameters and the step count.
 */
import type { AdamWHyper, Backend } from "./backend";
import { restoreAfter } from "./restoreAfter";
import type { Tensor } from "./tensor";

/** One fused AdamW update: equal-length lists, `lowPrecision` the autocast copies written beside (or null). */
export interface FusedAdamWCall {
  readonly params: readonly Tensor[];
  readonly grads: readonly Tensor[];
  readonly expAvg: readonly Tensor[];
  readonly expAvgSq: readonly Tensor[];
  readonly hyper: AdamWHyper;
  readonly lowPrecision?: readonly (Tensor | null)[];
}

/** Runs the whole call (some of it elsewhere, the rest with `onBackend`), or returns false to leave all of it to the backend. */
export type AdamWRoute = (call: FusedAdamWCall, onBackend: (call: FusedAdamWCall) => void) => boolean;

const routes: AdamWRoute[] = [];

/** Runs `fn` with `route` deciding where fused AdamW updates run (until its promise settles, when it returns one). */
export function routeAdamW<T>(route: AdamWRoute, fn: () => T): T {
  routes.push(route);
  return restoreAfter(fn, () => {
    const i = routes.lastIndexOf(route);
    if (i >= 0) routes.splice(i, 1);
  });
}

/** The call as the arguments of `Backend.adamw` (and `adamwBeside`). */
export function adamwArguments(call: FusedAdamWCall): Parameters<Backend["adamw"]> {
  return [[...call.params], [...call.grads], [...call.expAvg], [...call.expAvgSq], call.hyper, call.lowPrecision && [...call.lowPrecision]];
}

/** Runs the whole call on its parameters' backend, no route asked. */
export function adamwOnBackend(call: FusedAdamWCall): void {
  if (call.params.length === 0) return;
  call.params[0].backend.adamw(...adamwArguments(call));
}

/** The fused AdamW update of an optimizer: through the installed route, else on the parameters' backend. */
export function fusedAdamW(call: FusedAdamWCall): void {
  const route = routes.at(-1);
  if (route && route(call, adamwOnBackend)) return;
  adamwOnBackend(call);
}
