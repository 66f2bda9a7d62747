/**
 * Seeded random streams. A Generator is a (seed, offset) pair over the Philox4x32-10 counter
 * stream that every backend implements bit for bit: a draw of n numbers uses counters
 * [offset, offset + n) and advances the offset, so results do not depend on the device and a draw
 * can be replayed exactly (activation checkpointing recomputes dropout masks this way).
 */
import type { PhiloxState } from "./backend";

export interface GeneratorState {
  readonly seed: string;
  readonly offset: number;
}

export class Generator {
  private seedValue: bigint;
  private offsetValue = 0;

  constructor(seed: number | bigint = 0) {
    this.seedValue = toSeed(seed);
  }

  get seed(): bigint {
    return this.seedValue;
  }

  manualSeed(seed: number | bigint): this {
    this.seedValue = toSeed(seed);
    this.offsetValue = 0;
    return this;
  }

  /** Reserves `n` counters and returns where they start. */
  take(n: number): PhiloxState {
    const state = { seed: this.seedValue, offset: this.offsetValue };
    // Rounded up to 4 so that a GPU kernel drawing 4 values per thread never overlaps the next draw.
    this.offsetValue += Math.ceil(n / 4) * 4;
    if (this.offsetValue > Number.MAX_SAFE_INTEGER) this.offsetValue = 0;
    return state;
  }

  getState(): GeneratorState {
    return { seed: this.seedValue.toString(), offset: this.offsetValue };
  }

  setState(state: GeneratorState): void {
    if (!state || typeof state.seed !== "string" || !/^\d+$/.test(state.seed) || !Number.isSafeInteger(state.offset)) {
      throw new TypeError(`Generator.setState: expected { seed: decimal string, offset: integer }, got ${JSON.stringify(state)}`);
    }
    this.seedValue = BigInt(state.seed);
    this.offsetValue = state.offset;
  }
}

function toSeed(seed: number | bigint): bigint {
  if (typeof seed === "number") {
    if (!Number.isSafeInteger(seed) || seed < 0) {
      throw new TypeError(`seed: got ${seed}; expected a non-negative integer`);
    }
    return BigInt(seed);
  }
  if (typeof seed !== "bigint" || seed < 0n) throw new TypeError(`seed: got ${String(seed)}; expected a non-negative integer`);
  return seed & 0xffffffffffffffffn;
}

let globalGenerator = new Generator(0);

export function defaultGenerator(): Generator {
  return globalGenerator;
}

/** Seeds the default generator (like torch.manual_seed). */
export function manualSeed(seed: number | bigint): Generator {
  globalGenerator.manualSeed(seed);
  return globalGenerator;
}

/** Replaces the default generator (tests, checkpoint restore). */
export function setDefaultGenerator(g: Generator): void {
  globalGenerator = g;
}
