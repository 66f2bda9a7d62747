/**
 * Out of memory, as every backend reports it. The CPU backend throws `OutOfMemoryError` when an
 * allocation would pass the limit a test set (`setCpuMemoryLimit`: the host itself has no limit a
 * program can meet gracefully); the CUDA backend throws its own `CudaOutOfMemoryError`. Both carry
 * the bytes requested, so `isOutOfMemory` recognises them by shape (DESIGN.md decision 11), and
 * whoever knows more adds it on the way up: the sharding engine the phase "gather" and the unit,
 * the Trainer the step and the phase and what the memory plan says would fit.
 */
export class OutOfMemoryError extends Error {
  override readonly name = "OutOfMemoryError";
  constructor(
    message: string,
    readonly device: string,
    /** Bytes the failed allocation asked for. */
    readonly requested: number,
  ) {
    super(message);
  }
}

/** What a layer above adds to an out-of-memory error it saw pass (the phase, and where in it). */
export interface OutOfMemoryContext {
  readonly phase?: "forward" | "backward" | "optimizer" | "gather";
  readonly where?: string;
}

/** An allocation failure from any backend: an Error named `*OutOfMemoryError` with the bytes requested. */
export function isOutOfMemory(err: unknown): err is Error & { readonly requested: number } & OutOfMemoryContext {
  return err instanceof Error && /OutOfMemoryError$/.test(err.name) && typeof (err as { requested?: unknown }).requested === "number";
}

/** Adds the phase and where to an out-of-memory error, keeping what an inner layer already said. */
export function annotateOutOfMemory(err: unknown, context: OutOfMemoryContext): void {
  if (!isOutOfMemory(err)) return;
  const e = err as unknown as { phase?: string; where?: string };
  if (e.phase === undefined && context.phase !== undefined) e.phase = context.phase;
  if (e.where === undefined && context.where !== undefined) e.where = context.where;
}
