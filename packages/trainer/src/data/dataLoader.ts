/**
 * Batches samples from a dataset. Samples that are typed arrays or tensors are stacked into one
 * tensor per batch; plain objects are collated field by field. Iteration is synchronous and
 * deterministic given the epoch, which is what exact resumption needs.
 */
import { type Tensor, fromHost, isTensor, stack } from "@fulgur/tensor";
import type { Dataset } from "./dataset";
import { type Sampler, DistributedSampler, RandomSampler, SequentialSampler } from "./sampler";

export type Collate<T, B> = (samples: T[]) => B;

export interface DataLoaderOptions<T, B> {
  batchSize?: number;
  shuffle?: boolean;
  /** Seed of the shuffle permutation (default 0). */
  seed?: number;
  dropLast?: boolean;
  collate?: Collate<T, B>;
  sampler?: Sampler;
}

/** Stacks typed arrays (Int32Array -> int32, Float32Array -> float32, ...) and tensors; recurses into arrays/objects. */
export function defaultCollate(samples: unknown[]): unknown {
  const first = samples[0];
  if (first instanceof Int32Array || first instanceof Float32Array || first instanceof Float64Array) {
    const n = first.length;
    const Ctor = first.constructor as { new (len: number): Int32Array | Float32Array | Float64Array };
    const out = new Ctor(samples.length * n);
    samples.forEach((s, i) => {
      const a = s as typeof first;
      if (a.length !== n) throw new RangeError(`defaultCollate: sample ${i} has ${a.length} elements, sample 0 has ${n}`);
      out.set(a, i * n);
    });
    const dtype = first instanceof Int32Array ? "int32" : first instanceof Float32Array ? "float32" : "float64";
    return fromHost(out, [samples.length, n], dtype);
  }
  if (isTensor(first)) return stack(samples as Tensor[], 0);
  if (typeof first === "number") return fromHost(Float32Array.from(samples as number[]), [samples.length], "float32");
  if (Array.isArray(first)) return first.map((_, k) => defaultCollate(samples.map((s) => (s as unknown[])[k])));
  if (typeof first === "object" && first !== null) {
    return Object.fromEntries(Object.keys(first).map((k) => [k, defaultCollate(samples.map((s) => (s as Record<string, unknown>)[k]))]));
  }
  return samples;
}

export class DataLoader<T = unknown, B = unknown> implements Iterable<B> {
  readonly batchSize: number;
  readonly dropLast: boolean;
  readonly shuffle: boolean;
  readonly seed: number;
  private sampler: Sampler;
  private readonly collate: Collate<T, B>;
  /** The epoch whose order the next iteration follows. */
  epoch = 0;

  constructor(
    readonly dataset: Dataset<T>,
    options: DataLoaderOptions<T, B> = {},
  ) {
    const bs = options.batchSize ?? 1;
    if (!Number.isInteger(bs) || bs < 1) throw new RangeError(`DataLoader: batchSize must be a positive integer, got ${bs}`);
    this.batchSize = bs;
    this.dropLast = options.dropLast ?? false;
    this.shuffle = options.shuffle ?? false;
    this.seed = options.seed ?? 0;
    this.collate = options.collate ?? (defaultCollate as Collate<T, B>);
    this.sampler =
      options.sampler ?? (this.shuffle ? new RandomSampler(dataset.length, this.seed) : new SequentialSampler(dataset.length));
  }

  get length(): number {
    const n = this.sampler.length;
    return this.dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
  }

  setEpoch(epoch: number): void {
    this.epoch = epoch;
  }

  /** Shards this loader for one rank of a data-parallel job (the Trainer calls this for DDP-like strategies). */
  distributed(numReplicas: number, rank: number): DataLoader<T, B> {
    const dl = new DataLoader<T, B>(this.dataset, {
      batchSize: this.batchSize,
      dropLast: this.dropLast,
      shuffle: this.shuffle,
      seed: this.seed,
      collate: this.collate,
      sampler: new DistributedSampler(this.dataset.length, { numReplicas, rank, shuffle: this.shuffle, seed: this.seed, dropLast: this.dropLast }),
    });
    dl.epoch = this.epoch;
    return dl;
  }

  /** Batches of the current epoch, starting at batch `skip` (for resuming mid-epoch). */
  *batches(skip = 0): Generator<B> {
    const idx = this.sampler.indices(this.epoch);
    const total = this.length;
    for (let b = skip; b < total; b++) {
      const slice = idx.slice(b * this.batchSize, (b + 1) * this.batchSize);
      yield this.collate(slice.map((i) => this.dataset.get(i)));
    }
  }

  [Symbol.iterator](): Iterator<B> {
    return this.batches(0);
  }
}
