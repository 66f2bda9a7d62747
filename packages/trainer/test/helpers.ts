import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { onTestFinished } from "vitest";
import { DataLoader, TextDataset } from "../src";

export const TEXT = "the quick brown fox jumps over the lazy dog; fulgur trains models in typescript. ".repeat(60);

export function tmp(prefix = "fulgur-trainer-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  // Removed when the test that made it ends, passed or failed.
  onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export const TINY = { dModel: 32, nLayers: 1, nHeads: 2, seqLen: 16, vocabSize: 256 } as const;

export function loader(options: { batchSize?: number; shuffle?: boolean; seqLen?: number } = {}): DataLoader<Int32Array> {
  const ds = TextDataset.fromText(TEXT, { seqLen: options.seqLen ?? TINY.seqLen });
  return new DataLoader(ds, { batchSize: options.batchSize ?? 4, shuffle: options.shuffle ?? true, seed: 3, dropLast: true });
}
