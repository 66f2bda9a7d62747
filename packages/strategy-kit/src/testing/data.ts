/**
 * The synthetic token stream every conformance run trains on. Micro-batch `i` is a pure function of
 * (seed, i): the single-device reference and every rank of every world see the same global batch,
 * and each data-parallel rank takes its own contiguous block of rows. Rows are arithmetic
 * progressions modulo the vocabulary (a random start and stride per row), so the tiny GPT learns
 * them within a few steps and the losses move enough for a wrong gradient to show.
 */

export interface TokenBatch {
  /** Inputs, rows × seqLen, row-major. */
  readonly inputs: Int32Array;
  /** The next token of each input position. */
  readonly targets: Int32Array;
  readonly rows: number;
  readonly seqLen: number;
}

/** mulberry32: a small, fast generator whose whole state is one 32-bit integer. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
}

const gcd = (a: number, b: number): number => (b === 0 ? a : gcd(b, a % b));

/**
 * Rows of the global batch: divisible by every data-parallel size up to `maxWorldSize` (a strategy
 * may shard data over fewer ranks than the world), and at least 4.
 */
export function globalRows(maxWorldSize: number): number {
  let rows = 1;
  for (let n = 2; n <= maxWorldSize; n++) rows = (rows * n) / gcd(rows, n);
  return rows * Math.ceil(4 / rows);
}

/** Micro-batch `index` of the stream, rows `[first, first + count)` of its global batch. */
export function tokenBatch(
  o: { readonly seed: number; readonly rows: number; readonly seqLen: number; readonly vocabSize: number },
  index: number,
  first = 0,
  count = o.rows,
): TokenBatch {
  if (first < 0 || count < 1 || first + count > o.rows) {
    throw new RangeError(`tokenBatch: rows [${first}, ${first + count}) are outside the global batch of ${o.rows}`);
  }
  const inputs = new Int32Array(count * o.seqLen);
  const targets = new Int32Array(count * o.seqLen);
  for (let r = 0; r < count; r++) {
    // One generator per (batch, row): a rank builds its rows without drawing the others'.
    const next = mulberry32((o.seed * 1_000_003 + index * 7919 + (first + r)) >>> 0);
    const start = next() % o.vocabSize;
    const stride = 1 + (next() % 7);
    for (let t = 0; t < o.seqLen; t++) {
      inputs[r * o.seqLen + t] = (start + t * stride) % o.vocabSize;
      targets[r * o.seqLen + t] = (start + (t + 1) * stride) % o.vocabSize;
    }
  }
  return { inputs, targets, rows: count, seqLen: o.seqLen };
}
