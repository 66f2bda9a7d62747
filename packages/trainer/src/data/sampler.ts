/**
 * Which sample indices a rank visits in an epoch. The shuffle is a seeded permutation of the epoch
 * number, so every rank agrees on it without communicating and a resumed run replays it exactly.
 */

export interface Sampler {
  /** The indices of one epoch, in order. */
  indices(epoch: number): number[];
  readonly length: number;
}

/** A Fisher–Yates permutation driven by a small seeded generator (mulberry32). */
export function permutation(n: number, seed: number): number[] {
  let a = seed >>> 0 || 0x9e3779b9;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1));
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

export class SequentialSampler implements Sampler {
  constructor(readonly length: number) {}
  indices(): number[] {
    return Array.from({ length: this.length }, (_, i) => i);
  }
}

export class RandomSampler implements Sampler {
  constructor(
    readonly length: number,
    private readonly seed = 0,
  ) {}
  indices(epoch: number): number[] {
    return permutation(this.length, this.seed * 1_000_003 + epoch);
  }
}

export interface DistributedSamplerOptions {
  numReplicas: number;
  rank: number;
  shuffle?: boolean;
  seed?: number;
  /** Drop the tail so shards are equal (true) or pad by repeating from the start (false, the default). */
  dropLast?: boolean;
}

/** Splits an epoch's indices into equal shards, one per rank (PyTorch's DistributedSampler). */
export class DistributedSampler implements Sampler {
  readonly length: number;
  private readonly total: number;

  constructor(
    private readonly datasetLength: number,
    private readonly options: DistributedSamplerOptions,
  ) {
    const { numReplicas, rank } = options;
    if (!Number.isInteger(numReplicas) || numReplicas < 1) {
      throw new RangeError(`DistributedSampler: numReplicas must be a positive integer, got ${numReplicas}`);
    }
    if (!Number.isInteger(rank) || rank < 0 || rank >= numReplicas) {
      throw new RangeError(`DistributedSampler: rank must be in [0, ${numReplicas - 1}], got ${rank}`);
    }
    this.length = options.dropLast ? Math.floor(datasetLength / numReplicas) : Math.ceil(datasetLength / numReplicas);
    this.total = this.length * numReplicas;
  }

  indices(epoch: number): number[] {
    const base = this.options.shuffle ?? true
      ? permutation(this.datasetLength, (this.options.seed ?? 0) * 1_000_003 + epoch)
      : Array.from({ length: this.datasetLength }, (_, i) => i);
    let all = base;
    if (this.total > base.length) {
      all = [...base];
      while (all.length < this.total) all.push(...base.slice(0, this.total - all.length));
    } else all = base.slice(0, this.total);
    // Rank r takes every numReplicas-th index starting at r, as PyTorch does.
    const out: number[] = [];
    for (let i = this.options.rank; i < this.total; i += this.options.numReplicas) out.push(all[i]);
    return out;
  }
}
