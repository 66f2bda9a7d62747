/**
 * What a meta storage is: no memory, only the record of how it was written. Every write that
 * reaches the meta backend is appended to the log of each storage it writes, with the views it
 * reads pinned to the point in their own logs where it read them (`RecordedView.at`). A prefix of
 * a log is therefore an immutable snapshot, and replaying it on a real backend gives, bit for bit,
 * the contents the storage would have had at that point (see materialize.ts).
 */
import type { Backend, Storage, View } from "../backend";
import type { DType, HostArray } from "../dtype";
import type { Tensor } from "../tensor";

/** The Backend methods that compute into views: what a log entry can replay. */
export type KernelName = Exclude<
  keyof Backend,
  "name" | "device" | "alloc" | "free" | "fromHost" | "read" | "memoryStats" | "resetPeak" | "synchronize"
>;

/** A view as a write saw it: its storage after the first `at` entries of that storage's log. */
export class RecordedView implements View {
  constructor(
    readonly storage: MetaStorage,
    readonly shape: readonly number[],
    readonly strides: readonly number[],
    readonly offset: number,
    readonly at: number,
  ) {}
}

export type LogEntry =
  /** A backend call, its views recorded; at least one of them is the storage this entry is logged in. */
  | { readonly kind: "call"; readonly method: KernelName; readonly args: readonly unknown[] }
  /** Host data the storage was made from (`fromHost`), kept as a copy. */
  | { readonly kind: "load"; readonly data: HostArray }
  /** Work that cannot be written as kernels (an initialiser computing on the host), run on the real tensors. */
  | {
      readonly kind: "init";
      readonly view: RecordedView;
      readonly inputs: readonly RecordedView[];
      readonly run: (target: Tensor, inputs: readonly Tensor[]) => void;
    };

export class MetaStorage implements Storage {
  /** Meta storages hold no memory. */
  readonly byteLength = 0;
  /** Every write, in order; appended to, never changed, so a prefix is a snapshot. */
  readonly log: LogEntry[] = [];

  constructor(
    readonly backend: Backend,
    readonly dtype: DType,
    readonly length: number,
  ) {}
}

/** What to do with a meta tensor whose values are wanted. */
export const MATERIALISE_HINT =
  "materialise the module first (materializeModule(module, device) from @fulgur/nn, or materialize(tensor, device) from @fulgur/tensor)";

/** The error for anything that needs a meta tensor's values, saying what to do instead. */
export function metaHasNoData(what: string): Error {
  return new Error(`${what}: meta tensors have no data; ${MATERIALISE_HINT}`);
}
