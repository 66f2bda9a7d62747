/**
 * Write versions per element range of a storage. Whoever keeps a value derived from some memory
 * (autocast's low-precision copy of a parameter) remembers the version of the range it read and
 * trusts its value while that version is unchanged.
 *
 * [Note: range versions]
 * Parameters are views into one flat buffer per unit (DESIGN.md, decision 5), so one version per
 * storage would make every write to one parameter look like a write to all of them: the optimizer,
 * which updates parameters one after another, would leave every copy but the last stale. Versions
 * are therefore kept per range. Every write takes the next value of a per-storage clock and stamps
 * the element range it covers (a strided view's [lowest, highest] element: a superset for
 * transposed or strided views, which only costs a needless refresh); a range's version is the
 * latest stamp over any of its elements. It changes exactly when something overlapping the range
 * was written.
 *
 * The stamps are a piecewise-constant function over element offsets: `floor`, the stamp of the
 * last write of the whole storage, everywhere but in a sorted list of disjoint segments stamped
 * later. A write of the whole storage (an all-gather into a flat buffer, zeroing a gradient) sets
 * `floor` and empties the list in O(1). A write of a range that is already a segment (a parameter
 * updated again, the steady state) restamps it in O(log n) without allocating; other writes split
 * the segments they partly cover. Reading a range is a binary search plus the segments it spans,
 * one for a parameter; reading the whole storage is O(1) (the clock). n is bounded by the number of
 * distinct ranges written since the last whole write, at most ~2 per parameter of the buffer.
 */
import type { View } from "./backend";

/** Disjoint segments [starts[i], ends[i]] (inclusive), sorted, stamped times[i]: parallel arrays so that restamping allocates nothing. */
interface Segments {
  readonly starts: number[];
  readonly ends: number[];
  readonly times: number[];
}

export class RangeVersions {
  /** Stamp of the latest write anywhere: the version of the whole storage. */
  private clock = 0;
  /** Stamp of the latest write that covered the whole storage: every element's stamp is at least this. */
  private floor = 0;
  /** Ranges stamped after `floor`; made on the first partial write (most storages never have one). */
  private segs: Segments | null = null;

  constructor(private readonly length: number) {}

  /** The version of the whole storage: changes on any write. */
  get latest(): number {
    return this.clock;
  }

  /** Records a write of elements [lo, hi]. */
  write(lo: number, hi: number): void {
    const t = ++this.clock;
    const segs = this.segs;
    if (lo <= 0 && hi >= this.length - 1) {
      this.floor = t;
      if (segs !== null && segs.starts.length > 0) segs.starts.length = segs.ends.length = segs.times.length = 0;
      return;
    }
    if (segs === null) {
      this.segs = { starts: [lo], ends: [hi], times: [t] };
      return;
    }
    const { starts, ends, times } = segs;
    const i = firstEndingAtOrAfter(ends, lo);
    if (i < starts.length && starts[i] === lo && ends[i] === hi) {
      times[i] = t;
      return;
    }
    let j = i;
    while (j < starts.length && starts[j] <= hi) j++;
    // Segments i..j-1 overlap [lo, hi]: the new segment replaces them, keeping the parts of the
    // first and last that stick out with their old stamps.
    const s = [lo];
    const e = [hi];
    const ts = [t];
    if (j > i && starts[i] < lo) {
      s.unshift(starts[i]);
      e.unshift(lo - 1);
      ts.unshift(times[i]);
    }
    if (j > i && ends[j - 1] > hi) {
      s.push(hi + 1);
      e.push(ends[j - 1]);
      ts.push(times[j - 1]);
    }
    starts.splice(i, j - i, ...s);
    ends.splice(i, j - i, ...e);
    times.splice(i, j - i, ...ts);
  }

  /** The version of elements [lo, hi]: the latest stamp of a write that overlapped them. */
  read(lo: number, hi: number): number {
    if (lo <= 0 && hi >= this.length - 1) return this.clock;
    let v = this.floor;
    const segs = this.segs;
    if (segs === null) return v;
    const { starts, ends, times } = segs;
    for (let i = firstEndingAtOrAfter(ends, lo); i < starts.length && starts[i] <= hi; i++) {
      if (times[i] > v) v = times[i];
    }
    return v;
  }
}

/** Index of the first segment whose end is >= `at` (the segments are sorted and disjoint, so their ends are too). */
function firstEndingAtOrAfter(ends: readonly number[], at: number): number {
  let lo = 0;
  let hi = ends.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (ends[mid] < at) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** Records a write through `view` (nothing for an empty view). */
export function recordWrite(versions: RangeVersions, view: View): void {
  const hi = extentHi(view);
  if (hi >= 0) versions.write(extentLo(view), hi);
}

/** The version of the range `view` covers. */
export function versionOf(versions: RangeVersions, view: View): number {
  const hi = extentHi(view);
  return hi < 0 ? versions.latest : versions.read(extentLo(view), hi);
}

/** Lowest element a view touches. */
function extentLo(v: View): number {
  let lo = v.offset;
  for (let d = 0; d < v.shape.length; d++) if (v.strides[d] < 0) lo += (v.shape[d] - 1) * v.strides[d];
  return lo;
}

/** Highest element a view touches, or -1 for a view of no elements. */
function extentHi(v: View): number {
  let hi = v.offset;
  for (let d = 0; d < v.shape.length; d++) {
    const n = v.shape[d];
    if (n === 0) return -1;
    if (v.strides[d] > 0) hi += (n - 1) * v.strides[d];
  }
  return hi;
}
