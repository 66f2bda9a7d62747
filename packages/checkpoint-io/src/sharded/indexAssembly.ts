/**
 * Building index.json from the rank files of an unfinished save, and writing it. The coordinating
 * rank runs this after every rank has finished writing: each file's header says what it holds
 * (rankFile.ts), so the index is assembled from what is actually on disk, checked piece by piece
 * against the stored tensors, and validated as a reader would validate it (no overlaps, full
 * coverage) before it is written. A save whose ranks disagree on a tensor fails here, naming it.
 */
import type { CheckpointMeta } from "@fulgur/core";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { writeFileAtomic } from "../atomicFile";
import { hasOwn, setOwn } from "../safetensors/format";
import { SafetensorsFile } from "../safetensors/reader";
import { INDEX_FILE, SHARDED_FORMAT, SHARDED_FORMAT_VERSION, encodeIndex, rankFileName, type PieceEntry, type ShardedIndex, type ShardedTensorEntry } from "./format";
import { checkPieceInFile, decodeRankDescription, validateIndex } from "./indexValidation";

/** A rank that fails to write its file leaves its error message here, for the coordinating rank to report. */
export function failureMarkerFor(rankFile: string): string {
  return `${rankFile}.failed`;
}

async function missingRankFile(dir: string, file: string, rank: number): Promise<Error> {
  const why = await readFile(join(dir, failureMarkerFor(file)), "utf8").catch(() => undefined);
  return new Error(
    `rank ${rank} wrote no ${file}` +
      (why !== undefined ? `: it failed with "${why.slice(0, 2000)}"` : " (did it fail, or do the ranks not share one filesystem?)"),
  );
}

const describe = (t: { dtype: string; shape: readonly number[] }) => `${t.dtype} [${t.shape.join(", ")}]`;

/** The index of the rank files in `dir`, written by `worldSize` ranks, carrying `meta`. */
export async function assembleIndex(dir: string, worldSize: number, meta: CheckpointMeta): Promise<ShardedIndex> {
  const files = Array.from({ length: worldSize }, (_, r) => rankFileName(r, worldSize));
  const merged: Record<string, { entry: ShardedTensorEntry; pieces: PieceEntry[]; rank: number }> = {};
  for (let rank = 0; rank < worldSize; rank++) {
    const path = join(dir, files[rank]);
    const file = await SafetensorsFile.open(path).catch(async (e: NodeJS.ErrnoException) => {
      throw e.code === "ENOENT" ? await missingRankFile(dir, files[rank], rank) : e;
    });
    try {
      const own = decodeRankDescription(file.header.metadata, path, { rank, worldSize, file: files[rank] });
      const byKey = new Map(file.header.tensors.map((t) => [t.name, t]));
      for (const [name, t] of Object.entries(own.tensors)) {
        for (const p of t.pieces) checkPieceInFile(name, t, p, byKey.get(p.key), path);
        const seen = hasOwn(merged, name) ? merged[name] : undefined;
        if (!seen) {
          setOwn(merged, name, { entry: t, pieces: [...t.pieces], rank });
          continue;
        }
        if (describe(seen.entry) !== describe(t)) {
          throw new Error(`tensor ${JSON.stringify(name)} is ${describe(seen.entry)} on rank ${seen.rank} but ${describe(t)} on rank ${rank}`);
        }
        seen.pieces.push(...t.pieces);
        if (t.partial) seen.entry = { ...seen.entry, partial: true };
      }
    } finally {
      await file.close();
    }
  }
  const tensors: Record<string, ShardedTensorEntry> = {};
  for (const [name, m] of Object.entries(merged)) setOwn(tensors, name, { ...m.entry, pieces: m.pieces });
  const index: ShardedIndex = { format: SHARDED_FORMAT, version: SHARDED_FORMAT_VERSION, world_size: worldSize, files, tensors, meta };
  // The same checks a reader makes: a save that would not load fails now, not at resume time.
  return validateIndex(JSON.parse(encodeIndex(index)), join(dir, INDEX_FILE));
}

/** Writes index.json into `dir` (atomically: a reader sees no index or the whole one). */
export async function writeIndex(dir: string, index: ShardedIndex): Promise<void> {
  const bytes = new TextEncoder().encode(encodeIndex(index));
  await writeFileAtomic(join(dir, INDEX_FILE), (write) => write(bytes));
}
