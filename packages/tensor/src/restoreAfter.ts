/**
 * The shape every "run fn with a setting" helper here shares (noGrad, autocast, withDevice,
 * sharedHostMemory, routeAdamW): the setting is put back when fn returns or throws, and, when fn
 * returns a promise, only once the promise settles (an async step that awaits between its parts).
 */
export function restoreAfter<T>(fn: () => T, restore: () => void): T {
  let result: T;
  try {
    result = fn();
  } catch (err) {
    restore();
    throw err;
  }
  if (result instanceof Promise) return result.finally(restore) as T;
  restore();
  return result;
}
