/** The key-value store ranks use to find each other and exchange small facts (NCCL ids, failures). */

export interface Store {
  set(key: string, value: Uint8Array | string): Promise<void>;
  /** Waits until the key exists (or the timeout, in ms, passes) and returns its value. */
  get(key: string, timeoutMs?: number): Promise<Uint8Array>;
  /** Waits until every key exists; rejects naming the missing keys on timeout. */
  wait(keys: readonly string[], timeoutMs?: number): Promise<void>;
  /** Atomically adds to an integer counter (created at 0) and returns the new value. */
  add(key: string, amount: number): Promise<number>;
  /** Sets `desired` if the current value equals `expected` (an absent key matches ""); returns the value now stored. */
  compareSet(key: string, expected: Uint8Array | string, desired: Uint8Array | string): Promise<Uint8Array>;
  /** Returns whether the key existed. */
  delete(key: string): Promise<boolean>;
  close(): Promise<void>;
}
