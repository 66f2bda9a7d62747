/**
 * Where the model is cut: the blocks of each (virtual) stage, as block-index bounds. Stage 0 also
 * holds what comes before the blocks (embeddings) and the last stage what comes after (final norm,
 * head, loss); "params" balancing counts those in.
 */

/** bounds[s]..bounds[s+1] are stage s's blocks; S + 1 entries, from 0 to the number of blocks. */
export type StageBounds = readonly number[];

export function boundsFromSplitPoints(splitPoints: readonly number[], blocks: number, stages: number): StageBounds {
  if (splitPoints.length !== stages - 1) {
    throw new RangeError(`pipeline splitPoints: got ${splitPoints.length} split points for ${stages} stages; expected ${stages - 1}`);
  }
  const bounds = [0, ...splitPoints, blocks];
  for (let s = 0; s < stages; s++) {
    if (!(bounds[s + 1] > bounds[s])) {
      throw new RangeError(`pipeline splitPoints: got [${splitPoints.join(", ")}] for ${blocks} blocks; every stage needs at least one block, in increasing order below ${blocks}`);
    }
  }
  return Object.freeze(bounds);
}

/**
 * Cuts `weights` (one per block) into `stages` contiguous runs minimising the heaviest run (the
 * classic linear partition, exact by dynamic programming), each run at least one block.
 */
export function balancedBounds(weights: readonly number[], stages: number): StageBounds {
  const n = weights.length;
  if (stages > n) throw new RangeError(`pipeline: ${stages} stages but only ${n} blocks to cut between; use fewer stages (or virtual stages)`);
  const prefix = [0];
  for (const w of weights) prefix.push(prefix[prefix.length - 1] + w);
  // best[k][i]: the lightest heaviest run cutting the first i blocks into k runs; cut[k][i] the last run's start.
  const best = Array.from({ length: stages + 1 }, () => new Array<number>(n + 1).fill(Infinity));
  const cut = Array.from({ length: stages + 1 }, () => new Array<number>(n + 1).fill(0));
  best[0][0] = 0;
  for (let k = 1; k <= stages; k++) {
    for (let i = k; i <= n; i++) {
      for (let j = k - 1; j < i; j++) {
        const cost = Math.max(best[k - 1][j], prefix[i] - prefix[j]);
        // Ties go to the later cut: the last stage, which also runs the head and the loss, gets fewer blocks.
        if (cost <= best[k][i]) {
          best[k][i] = cost;
          cut[k][i] = j;
        }
      }
    }
  }
  const bounds = [n];
  for (let k = stages, i = n; k > 0; k--) {
    i = cut[k][i];
    bounds.unshift(i);
  }
  return Object.freeze(bounds);
}
