/**
 * "Did you mean": the closest known name to a misspelled one. DeepSpeed ignores most unknown
 * keys without a word (issues #653, #774, #1809), so a typo such as
 * stage3_param_persitance_threshold silently trains with the default; naming the intended key
 * is the cheapest fix there is.
 *
 * The distance is Damerau-Levenshtein in its optimal-string-alignment form (a swap of two
 * neighbouring letters counts once), compared without regard to case, because both are how
 * keys get mistyped.
 */

export function editDistance(a: string, b: string): number {
  const s = a.toLowerCase();
  const t = b.toLowerCase();
  // Three rolling rows suffice: a transposition looks back two rows.
  let before = new Array<number>(t.length + 1).fill(0);
  let previous = Array.from({ length: t.length + 1 }, (_, j) => j);
  let current = new Array<number>(t.length + 1).fill(0);
  for (let i = 1; i <= s.length; i++) {
    current[0] = i;
    for (let j = 1; j <= t.length; j++) {
      const cost = s[i - 1] === t[j - 1] ? 0 : 1;
      let best = Math.min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost);
      if (i > 1 && j > 1 && s[i - 1] === t[j - 2] && s[i - 2] === t[j - 1]) best = Math.min(best, before[j - 2] + 1);
      current[j] = best;
    }
    [before, previous, current] = [previous, current, before];
  }
  return previous[t.length];
}

/**
 * How far a name may be from a candidate and still be suggested: about a third of its length,
 * so a long key tolerates a dropped syllable while a short one only a slip of one or two letters.
 */
export function tolerance(length: number): number {
  if (length <= 3) return 1;
  if (length <= 6) return 2;
  return Math.floor(length / 3);
}

/** The candidate closest to `word` within tolerance (ties go to the earlier candidate), or undefined. */
export function closest(word: string, candidates: Iterable<string>): string | undefined {
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    if (candidate === word) continue;
    const distance = editDistance(word, candidate);
    if (distance < bestDistance && distance <= tolerance(Math.max(word.length, candidate.length))) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return best;
}
