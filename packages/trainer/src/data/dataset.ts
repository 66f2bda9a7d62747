/** Datasets: anything with a length and random access to samples. */

export interface Dataset<T = unknown> {
  readonly length: number;
  get(index: number): T;
}

/** A dataset over an in-memory array. */
export class ArrayDataset<T> implements Dataset<T> {
  constructor(private readonly items: readonly T[]) {}
  get length(): number {
    return this.items.length;
  }
  get(index: number): T {
    if (!Number.isInteger(index) || index < 0 || index >= this.items.length) {
      throw new RangeError(`ArrayDataset: index ${index} is out of range for ${this.items.length} items`);
    }
    return this.items[index];
  }
}
